"""``arrow-rl evaluate`` under the suite's protocol: the scenario its flags describe, measured as
``arrow-rl suite run`` measures every published figure (warm-up, superposed copies at the trace's
time scale, independent seeds on common loads, interpolated crossings, paired comparisons).

One protocol for every number a user sees: a first look with ``evaluate`` and the leaderboard
agree within their intervals. ``--protocol paper`` keeps Arrow §6.1's exact setting (timestamp
scaling, one seed, no warm-up) in ``arrow_rl.cli.evaluate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arrow_rl.cli.output import make_console

console = make_console()


def evaluate_with_suite(wl: Any, emu: Any, names: list[str], *, workload_label: str, seeds: int, span_s: float,
                        warmup_s: float, rel_tol: float, max_evals: int, growth: str, jobs: int,
                        arrow_config: Any, json_out: Path | None, plots: Path | None,
                        backend: str, ray_address: str | None) -> None:
    """Measure ``names`` on a one-scenario suite built from the flags, print and write its results."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from arrow_rl.cli.output import fail
    from arrow_rl.cli.suite import _publish
    from arrow_rl.evaluation.protocol import LoadSource, Protocol
    from arrow_rl.evaluation.suite import run_suite
    from arrow_rl.evaluation.suite_spec import Scenario, Suite

    protocol = Protocol(rate_mode="superpose", warmup_s=warmup_s, span_s=span_s, seeds=tuple(range(seeds)),
                        rel_tol=rel_tol, max_evals=max_evals, growth=growth)  # type: ignore[arg-type]
    name = f"{wl.name}-x{emu.num_instances}"
    scenario = Scenario(name, "custom", f"{workload_label} on {emu.num_instances} x {emu.preset}",
                        LoadSource(wl.name, trace=wl), workload_label, emu, "custom", protocol)
    suite = Suite("evaluate", Path(workload_label), "arrow-rl evaluate", [scenario], protocol)
    console.print(f"[bold]{wl.name}[/bold]: {len(wl):,} requests over {wl.duration_s:,.0f} s "
                  f"({wl.mean_rate:.3f} req/s); {emu.num_instances}x {emu.preset}; SLO TTFT {emu.slo_ttft_s:g} s, "
                  f"TPOT {emu.slo_tpot_s:g} s; suite protocol: {seeds} seeds, warm-up {warmup_s:g} s, counted span "
                  f"{span_s:g} s, load by {growth} superposed copies, crossing bracket ≤ {100 * rel_tol:g}%")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task("controllers", total=len({("static" if n.startswith("static-") else n) for n in names}))

        def on_run(scenario: str, spec: str, rate: float, att: float) -> None:
            bar.update(task, description=f"{spec} @ {rate:.3g} req/s: {100 * att:.0f}%")

        def on_job_done(scenario: str, controller: str, wall: float) -> None:
            bar.update(task, advance=1)
            if not console.is_terminal:
                console.print(f"done {controller} in {wall:.0f} s")
                console.file.flush()

        try:
            result = run_suite(suite, names, jobs=jobs, on_job_done=on_job_done, on_run=on_run, backend=backend,
                               ray_address=ray_address, arrow_config=arrow_config)
        except ValueError as exc:
            bar.remove_task(task)
            fail(str(exc))
            return
    result.settings.update(workload=workload_label, protocol_name="suite")
    _publish(result, names, json_out, plots, None, None)
    if plots is not None:
        from arrow_rl.evaluation.plots import plot_attainment_seeds

        console.print("plot: " + str(plot_attainment_seeds(result, plots / "attainment_vs_rate.png")))
