"""``arrow-rl evaluate``: compare instance-scheduling policies by request serving rate (Arrow §6.1).

    arrow-rl evaluate --preset P --instances N --workload TRACE --slo-ttft S --slo-tpot S \
        --controllers arrow,static-tuned,colocated,dynamo [--seeds 5] [--jobs J] --json OUT.json
        [--rate-mode superpose|scale] [--backend ray [--ray-address ADDR]]

The scenario the flags describe is run as a one-scenario suite (``arrow_rl.evaluation.suite``):
warm-up, loads grown at the trace's time scale (or Arrow §6.1's timestamp scaling with
``--rate-mode scale``), independent seeds on common loads, interpolated crossings and paired
comparisons. One protocol for every number a user sees: a first look with ``evaluate`` and the
leaderboard agree within their intervals.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer

from arrow_rl.cli.backend import address_option, backend_option, check_backend
from arrow_rl.cli.output import fail, make_console, warn

console = make_console()
DEFAULT_CONTROLLERS = "arrow,static-tuned,colocated,dynamo"


def _fail(message: str) -> NoReturn:
    fail(message)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)


def evaluate_command(
    preset: str = typer.Option(..., "--preset", help="instance type preset, e.g. h100-llama3.1-70b-tp4"),
    instances: int = typer.Option(..., "--instances", min=2, help="number of instances N"),
    workload: str = typer.Option(..., "--workload", help="trace file or bundled name (azure-code, azure-conv, mooncake)"),
    slo_ttft: float = typer.Option(..., "--slo-ttft", help="TTFT SLO in seconds"),
    slo_tpot: float = typer.Option(..., "--slo-tpot", help="TPOT SLO in seconds"),
    controllers: str = typer.Option(
        DEFAULT_CONTROLLERS, "--controllers",
        help="comma list: arrow, arrow-interval, colocated, static:P, static:P:D:M, static-tuned (the split a "
             "deployer would fix, cross-fitted on other seeds), static-oracle (per-seed hindsight best split), "
             "dynamo, oracle, mpc (the oracle's search on a forecast of the recent past), or checkpoint paths"),
    seeds: int = typer.Option(5, "--seeds", min=1, max=50, help="independent seeds (0..N-1)"),
    rate_mode: str = typer.Option("superpose", "--rate-mode", help="how the load is raised: superpose (copies of "
                                  "the trace at its own time scale) or scale (timestamps divided, Arrow §6.1)"),
    growth: str = typer.Option("independent", "--growth", help="superpose: how copies of the trace are overlaid: "
                               "independent (random offsets) or aligned (the same window, jittered)"),
    warmup: float = typer.Option(120.0, "--warmup", min=0.0, help="seconds at the measured rate served but not counted"),
    span: float = typer.Option(300.0, "--span", help="superpose: counted span (s) of each load"),
    rel_tol: float = typer.Option(0.05, "--rel-tol", help="refine each crossing's bracket to this relative width"),
    max_evals: int = typer.Option(12, "--max-evals", min=2, help="simulations per controller and seed (bound)"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="parallel worker processes (one controller each)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write results as JSON"),
    plots: Optional[Path] = typer.Option(None, "--plots", help="directory for attainment_vs_rate.png and "
                                         "suite_serving_rate.png"),
    trace_format: Optional[str] = typer.Option(None, "--format", help="trace format; default: detect"),
    start: float = typer.Option(0.0, "--start", min=0.0, help="take the trace from this time (s)"),
    duration: Optional[float] = typer.Option(None, "--duration", help="take only this many seconds of the trace"),
    arrow_config: Optional[Path] = typer.Option(None, "--arrow-config", help="YAML with Arrow's constants (configs/arrow/<workload>.yaml)"),
    max_num_batched_tokens: Optional[int] = typer.Option(
        None, "--max-num-batched-tokens", help="default: vLLM's serve default on the preset's GPU (8192 on H100)"),
    max_num_seqs: Optional[int] = typer.Option(
        None, "--max-num-seqs", help="default: vLLM's serve default on the preset's GPU (1024 on H100)"),
    flip_delay: float = typer.Option(0.0, "--flip-delay", help="seconds an instance admits no new work after a flip"),
    backend: str = backend_option(),
    ray_address: Optional[str] = address_option(),
) -> None:
    """Measure each controller's serving rate (≥90% SLO attainment) on the scenario the flags describe,
    as the suite measures the leaderboard, and compare them in pairs."""
    from arrow_rl.evaluation.suite_spec import one_scenario_suite

    check_backend(backend, ray_address)
    protocol = _protocol(seeds, rate_mode, growth, warmup, span, rel_tol, max_evals)
    wl = _trace(workload, trace_format, start, duration)
    emu = _emulator_config(preset, instances, slo_ttft, slo_tpot, max_num_batched_tokens, max_num_seqs, flip_delay)
    acfg = _arrow_config(arrow_config)
    names = [c.strip() for c in controllers.split(",") if c.strip()]
    for name in names:
        for line in _checkpoint_warnings(name, preset, instances, slo_ttft, slo_tpot):
            warn(line)
    suite = one_scenario_suite(wl, emu, workload, protocol)
    console.print(_header(wl, emu, protocol))
    _run_and_publish(suite, names, jobs=jobs, backend=backend, ray_address=ray_address, arrow_config=acfg,
                     workload_label=workload, json_out=json_out, plots=plots)


def _protocol(seeds: int, rate_mode: str, growth: str, warmup: float, span: float, rel_tol: float,
              max_evals: int) -> Any:
    """The suite protocol the flags ask for (``arrow_rl.evaluation.protocol.Protocol``)."""
    from arrow_rl.evaluation.protocol import GROWTHS, RATE_MODES, Protocol

    if rate_mode not in RATE_MODES:
        _fail(f"--rate-mode must be {' or '.join(RATE_MODES)}, got {rate_mode!r}")
    if growth not in GROWTHS:
        _fail(f"--growth must be {' or '.join(GROWTHS)}, got {growth!r}")
    if not (span > 0 and math.isfinite(span)):
        _fail(f"--span must be a finite number > 0, got {span}")
    if not math.isfinite(warmup):
        _fail(f"--warmup must be finite, got {warmup}")
    if not (0 < rel_tol < 1):
        _fail(f"--rel-tol must be in (0, 1), got {rel_tol}")
    return Protocol(rate_mode=rate_mode, warmup_s=warmup, span_s=span, seeds=tuple(range(seeds)),  # type: ignore[arg-type]
                    rel_tol=rel_tol, max_evals=max_evals, growth=growth)


def _trace(workload: str, trace_format: Optional[str], start: float, duration: Optional[float]) -> Any:
    """The trace (``--start`` / ``--duration`` applied), with at least 2 requests."""
    from arrow_rl.workload.loaders import load_workload

    if duration is not None and not (duration > 0 and math.isfinite(duration)):
        _fail(f"--duration must be a finite number > 0, got {duration}")
    if not math.isfinite(start):
        _fail(f"--start must be finite, got {start}")
    try:
        wl = load_workload(workload, format=trace_format)
    except Exception as exc:  # noqa: BLE001 - loaders raise several types, all with clear messages
        _fail(str(exc))
    if start > 0 or duration is not None:
        wl = wl.window(start, start + duration if duration is not None else math.inf)
    if len(wl) < 2:
        _fail(f"workload {wl.name!r} has {len(wl)} requests in the chosen window; need at least 2")
    return wl


def _emulator_config(preset: str, instances: int, slo_ttft: float, slo_tpot: float,
                     max_num_batched_tokens: Optional[int], max_num_seqs: Optional[int], flip_delay: float) -> Any:
    from pydantic import ValidationError

    from arrow_rl.cluster.emulator.config import EmulatorConfig, format_validation_error

    try:
        return EmulatorConfig(preset=preset, num_instances=instances, max_num_batched_tokens=max_num_batched_tokens,
                              max_num_seqs=max_num_seqs, slo_ttft_s=slo_ttft, slo_tpot_s=slo_tpot,
                              flip_delay_s=flip_delay)
    except ValidationError as exc:
        _fail(format_validation_error(exc))


def _arrow_config(path: Optional[Path]) -> Any:
    """Arrow's constants from ``--arrow-config``; None (the paper's defaults) without it."""
    if path is None:
        return None
    from arrow_rl.arrow import ArrowConfig

    try:
        return ArrowConfig.from_yaml(path)
    except ValueError as exc:
        _fail(str(exc))


def _header(wl: Any, emu: Any, protocol: Any) -> str:
    load = (f"counted span {protocol.span_s:g} s, load by {protocol.growth} superposed copies"
            if protocol.rate_mode == "superpose" else "load by timestamp scaling (Arrow §6.1)")
    return (f"[bold]{wl.name}[/bold]: {len(wl):,} requests over {wl.duration_s:,.0f} s ({wl.mean_rate:.3f} req/s); "
            f"{emu.num_instances}x {emu.preset}; SLO TTFT {emu.slo_ttft_s:g} s, TPOT {emu.slo_tpot_s:g} s; "
            f"suite protocol: {len(protocol.seeds)} seeds, warm-up {protocol.warmup_s:g} s, {load}, "
            f"crossing bracket ≤ {100 * protocol.rel_tol:g}%")


def _run_and_publish(suite: Any, names: list[str], *, jobs: int, backend: str, ray_address: Optional[str],
                     arrow_config: Any, workload_label: str, json_out: Optional[Path], plots: Optional[Path]) -> None:
    """Run the one-scenario suite, print its tables and write the suite's outputs plus the
    attainment-vs-load plot."""
    from arrow_rl.cli.suite import publish, run_with_progress

    result = run_with_progress(suite, names, jobs=jobs, backend=backend, ray_address=ray_address,
                               arrow_config=arrow_config, name_scenarios=False)
    result.settings.update(workload=workload_label)
    publish(result, names, json_out, plots, None, None)
    if plots is not None:
        from arrow_rl.evaluation.plots import plot_attainment_seeds

        plots.mkdir(parents=True, exist_ok=True)
        console.print("plot: " + str(plot_attainment_seeds(result, plots / "attainment_vs_rate.png")))


def _checkpoint_warnings(spec: str, preset: str, instances: int, slo_ttft: float, slo_tpot: float) -> list[str]:
    """Where a checkpoint controller is evaluated outside its training distribution (no unpickling)."""
    path = Path(spec)
    if not (path / "metadata.json").is_file():
        return []
    from arrow_rl.controllers.registry import checkpoint_warnings

    return checkpoint_warnings(str(path), preset=preset, num_instances=instances, slo_ttft_s=slo_ttft,
                               slo_tpot_s=slo_tpot)
