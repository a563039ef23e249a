"""``arrow-rl evaluate``: compare instance-scheduling policies by request serving rate (Arrow §6.1).

    arrow-rl evaluate --preset P --instances N --workload TRACE --slo-ttft S --slo-tpot S \
        --controllers arrow,static-tuned,colocated,dynamo [--seeds 5] [--jobs J] --json OUT.json
        [--backend ray [--ray-address ADDR]]

By default the scenario the flags describe is measured under the suite's protocol
(``arrow_rl.cli.evaluate_suite``), so its figures agree with the leaderboard's. ``--protocol
paper`` is Arrow §6.1's exact setting: timestamp scaling of one seed, no warm-up, a bisection
per controller (``static-best`` sweeps every split there).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NoReturn, Optional

import typer
from arrow_rl.cli.backend import address_option, backend_option, check_backend
from arrow_rl.cli.output import fail, make_console, warn
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = make_console()


def _fail(message: str) -> NoReturn:
    fail(message)


def _parse_floats(text: str | None, what: str) -> list[float]:
    if not text:
        return []
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            _fail(f"{what}: {part!r} is not a number")
        if not (v > 0 and math.isfinite(v)):
            _fail(f"{what}: {part!r} must be a finite number > 0")
        out.append(v)
    return out


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)


# Bounds that keep one evaluation finite: a controller period below 10 ms is no real control loop,
# and a rate that stretches the trace over more than 100,000 control intervals would run for hours.
MIN_CONTROL_INTERVAL_S = 0.01
MAX_CONTROL_STEPS = 100_000


def evaluate_command(
    preset: str = typer.Option(..., "--preset", help="instance type preset, e.g. h100-llama3.1-70b-tp4"),
    instances: int = typer.Option(..., "--instances", min=2, help="number of instances N"),
    workload: str = typer.Option(..., "--workload", help="trace file or bundled name (azure-code, azure-conv, mooncake)"),
    slo_ttft: float = typer.Option(..., "--slo-ttft", help="TTFT SLO in seconds"),
    slo_tpot: float = typer.Option(..., "--slo-tpot", help="TPOT SLO in seconds"),
    controllers: Optional[str] = typer.Option(
        None, "--controllers",
        help="comma list: arrow, arrow-interval, colocated, static:P, static:P:D:M, static-tuned and static-oracle "
             "(suite protocol), static-best and static-best-pd (paper protocol), dynamo, oracle, or checkpoint paths "
             "(default: arrow,static-tuned,colocated,dynamo; paper: arrow,static-best,colocated,dynamo)"),
    protocol: str = typer.Option(
        "suite", "--protocol",
        help="suite: the leaderboard's protocol (warm-up, superposed copies, independent seeds, paired ratios; "
             "docs/evaluation.md); paper: Arrow §6.1 exactly (timestamp scaling, one seed, no warm-up)"),
    seeds: int = typer.Option(5, "--seeds", min=1, max=50, help="suite protocol: independent seeds (0..N-1)"),
    growth: str = typer.Option("independent", "--growth", help="suite protocol: how copies of the trace are "
                               "overlaid: independent (random offsets) or aligned (the same window, jittered)"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, help="paper protocol: the one seed"),
    rate_mode: Optional[str] = typer.Option(
        None, "--rate-mode",
        help="paper protocol: scale (default: divide trace timestamps, Arrow §6.1) or superpose"),
    warmup: Optional[float] = typer.Option(None, "--warmup", min=0.0, help="seconds at the measured rate served but "
                                           "not counted (default: 120 with the suite protocol, 0 with the paper's)"),
    span: Optional[float] = typer.Option(None, "--span", help="counted span (s) of superposed loads (default: 300 "
                                         "with the suite protocol, 600 with the paper's)"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="parallel worker processes (one sweep each)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write results as JSON"),
    trace_format: Optional[str] = typer.Option(None, "--format", help="trace format; default: detect"),
    start: float = typer.Option(0.0, "--start", min=0.0, help="take the trace from this time (s)"),
    duration: Optional[float] = typer.Option(None, "--duration", help="take only this many seconds of the trace"),
    rates: Optional[str] = typer.Option(None, "--rates", help="extra request rates (req/s, comma list) evaluated for every controller"),
    reference_rate: Optional[float] = typer.Option(None, "--reference-rate", help="rate (req/s) for the table's attainment column; default: the trace's own rate"),
    initial_rate: Optional[float] = typer.Option(None, "--initial-rate", help="rate (req/s) where the serving-rate search starts; default: the trace's own rate"),
    rel_tol: float = typer.Option(0.05, "--rel-tol", help="stop bisection when the bracket is within this relative width"),
    max_evals: int = typer.Option(12, "--max-evals", min=2, help="simulations per controller sweep (bound)"),
    control_interval: float = typer.Option(1.0, "--control-interval", help="controller period (s)"),
    arrow_config: Optional[Path] = typer.Option(None, "--arrow-config", help="YAML with Arrow's constants (configs/arrow/<workload>.yaml)"),
    max_num_batched_tokens: Optional[int] = typer.Option(
        None, "--max-num-batched-tokens", help="default: vLLM's serve default on the preset's GPU (8192 on H100)"),
    max_num_seqs: Optional[int] = typer.Option(
        None, "--max-num-seqs", help="default: vLLM's serve default on the preset's GPU (1024 on H100)"),
    flip_delay: float = typer.Option(0.0, "--flip-delay", help="seconds an instance admits no new work after a flip"),
    oracle_lookahead: float = typer.Option(30.0, "--oracle-lookahead", help="oracle: seconds simulated per candidate split"),
    oracle_interval: float = typer.Option(5.0, "--oracle-interval", help="oracle: seconds between re-plans"),
    oracle_max_step: int = typer.Option(2, "--oracle-max-step", min=1, help="oracle: candidates = current split ± 1..K"),
    oracle_mixed: Optional[bool] = typer.Option(
        None, "--oracle-mixed/--no-oracle-mixed",
        help="oracle: candidates include flips to and from MIXED (default: yes, the policies' routers serve MIXED)"),
    plots: Optional[Path] = typer.Option(None, "--plots", help="directory for attainment_vs_rate.png and timeline.png"),
    timeline_controller: Optional[str] = typer.Option(None, "--timeline-controller", help="controller whose run the timeline plot shows (default arrow)"),
    backend: str = backend_option(),
    ray_address: Optional[str] = address_option(),
) -> None:
    """Sweep the request rate for each controller and report its serving rate (≥90% attainment)."""
    from arrow_rl.cluster.emulator.config import EmulatorConfig, format_validation_error
    from arrow_rl.arrow import ArrowConfig
    from arrow_rl.controllers.baselines import OracleConfig
    from arrow_rl.evaluation.evaluate import evaluate
    from arrow_rl.evaluation.serving_rate import SweepSettings
    from arrow_rl.workload.loaders import load_workload
    from pydantic import ValidationError

    check_backend(backend, ray_address)
    if protocol not in ("suite", "paper"):
        _fail(f"--protocol must be suite or paper, got {protocol!r}")
    suite_protocol = protocol == "suite"
    if suite_protocol:
        for opt, val in (("--rates", rates), ("--reference-rate", reference_rate), ("--initial-rate", initial_rate),
                         ("--rate-mode", rate_mode), ("--timeline-controller", timeline_controller)):
            if val is not None:
                _fail(f"{opt} applies to --protocol paper only (the suite protocol searches a common load grid)")
        if growth not in ("independent", "aligned"):
            _fail(f"--growth must be independent or aligned, got {growth!r}")
    rate_mode = rate_mode or ("superpose" if suite_protocol else "scale")
    warmup = warmup if warmup is not None else (120.0 if suite_protocol else 0.0)
    span = span if span is not None else (300.0 if suite_protocol else 600.0)
    controllers = controllers or ("arrow,static-tuned,colocated,dynamo" if suite_protocol else
                                  "arrow,static-best,colocated,dynamo")

    for opt, val in (("--reference-rate", reference_rate), ("--initial-rate", initial_rate),
                     ("--duration", duration), ("--control-interval", control_interval),
                     ("--oracle-lookahead", oracle_lookahead), ("--oracle-interval", oracle_interval)):
        if val is not None and not (val > 0 and math.isfinite(val)):
            _fail(f"{opt} must be a finite number > 0, got {val}")
    if not (0 < rel_tol < 1):
        _fail(f"--rel-tol must be in (0, 1), got {rel_tol}")
    if not math.isfinite(start):
        _fail(f"--start must be finite, got {start}")
    try:
        wl = load_workload(workload, format=trace_format)
    except Exception as exc:  # noqa: BLE001 - loaders raise several types, all with clear messages
        _fail(str(exc))
        return
    if start > 0 or duration is not None:
        end = start + duration if duration is not None else math.inf
        wl = wl.window(start, end)
    if len(wl) < 2:
        _fail(f"workload {wl.name!r} has {len(wl)} requests in the chosen window; need at least 2")
    try:
        emu = EmulatorConfig(preset=preset, num_instances=instances, max_num_batched_tokens=max_num_batched_tokens,
                             max_num_seqs=max_num_seqs, slo_ttft_s=slo_ttft, slo_tpot_s=slo_tpot,
                             flip_delay_s=flip_delay)
    except ValidationError as exc:
        _fail(format_validation_error(exc))
        return
    try:
        acfg = ArrowConfig.from_yaml(arrow_config) if arrow_config is not None else ArrowConfig()
    except ValueError as exc:
        _fail(str(exc))
        return
    try:
        ocfg = OracleConfig(lookahead_s=oracle_lookahead, decision_interval_s=oracle_interval, max_step=oracle_max_step,
                            use_mixed=oracle_mixed)
    except ValidationError as exc:
        _fail(format_validation_error(exc))
        return
    base = wl.mean_rate
    explicit = [("--rates", r) for r in _parse_floats(rates, "--rates")]
    explicit += [(opt, r) for opt, r in (("--reference-rate", reference_rate), ("--initial-rate", initial_rate))
                 if r is not None]
    if control_interval < MIN_CONTROL_INTERVAL_S:
        _fail(f"--control-interval must be at least {MIN_CONTROL_INTERVAL_S:g} s, got {control_interval:g}")
    for opt, r in explicit:
        # a rate far below the trace's stretches it over so many control intervals that the run never ends
        steps = wl.duration_s * base / r / control_interval if r > 0 else math.inf
        if steps > MAX_CONTROL_STEPS:
            _fail(f"{opt} {r:g} req/s stretches the {wl.duration_s:,.0f} s workload over {steps:,.0f} control "
                  f"intervals (limit {MAX_CONTROL_STEPS:,}); use a rate of at least "
                  f"{wl.duration_s * base / control_interval / MAX_CONTROL_STEPS:.3g} req/s")
    extra_scales = tuple(r / base for r in _parse_floats(rates, "--rates"))
    initial_scale = (initial_rate / base) if initial_rate else 1.0
    if rate_mode not in ("scale", "superpose"):
        _fail(f"--rate-mode must be scale or superpose, got {rate_mode!r}")
    if not span > 0:
        _fail(f"--span must be > 0, got {span}")
    settings = SweepSettings(control_interval_s=control_interval, seed=seed, initial_scale=initial_scale,
                             rel_tol=rel_tol, max_evals=max_evals, extra_scales=extra_scales,
                             rate_mode=rate_mode, warmup_s=warmup, span_s=span)
    names = [c.strip() for c in controllers.split(",") if c.strip()]
    from arrow_rl.controllers.registry import expand_spec, make_policy
    from arrow_rl.evaluation.seeded_search import RENAMED, STATIC_FAMILY

    for name in names:
        if suite_protocol and name in RENAMED:
            _fail(f"controller {name!r} is for --protocol paper; under the suite protocol use {RENAMED[name]}")
        if not suite_protocol and name in STATIC_FAMILY:
            _fail(f"controller {name!r} needs the suite protocol's seeds; with --protocol paper use static-best")
    for spec in {s for name in names if name not in STATIC_FAMILY for s in expand_spec(name, instances)}:
        try:  # reject an unknown name or a bad checkpoint before any simulation starts
            make_policy(spec, instances)
        except ValueError as exc:
            _fail(str(exc))
    for name in names:
        for line in _checkpoint_warnings(name, preset, instances, slo_ttft, slo_tpot):
            warn(line)
    if suite_protocol:
        from arrow_rl.cli.evaluate_suite import evaluate_with_suite

        if control_interval != 1.0 or oracle_lookahead != 30.0 or oracle_interval != 5.0 or oracle_max_step != 2 \
                or oracle_mixed is not None:
            _fail("--control-interval and the --oracle-* options apply to --protocol paper only")
        evaluate_with_suite(wl, emu, names, workload_label=workload, seeds=seeds, span_s=span, warmup_s=warmup,
                            rel_tol=rel_tol, max_evals=max_evals, growth=growth, jobs=jobs,
                            arrow_config=acfg if arrow_config is not None else None, json_out=json_out,
                            plots=plots, backend=backend, ray_address=ray_address)
        return
    n_sweeps = sum(len(expand_spec(c, instances)) for c in names)
    est_points = n_sweeps * (max_evals + len(extra_scales) + 1)
    console.print(f"[bold]{wl.name}[/bold]: {len(wl):,} requests over {wl.duration_s:,.0f} s "
                  f"({base:.3f} req/s); {instances}x {preset}; SLO TTFT {slo_ttft:g} s, TPOT {slo_tpot:g} s; "
                  f"{n_sweeps} sweeps on " + (f"Ray ({ray_address or 'local'})" if backend == "ray" else f"{jobs} process(es)"))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task("simulations", total=est_points)

        def on_point(spec: str, scale: float, att: float) -> None:
            bar.update(task, advance=1, description=f"{spec} @ {scale * base:.3g} req/s: {100 * att:.1f}%")

        try:
            with _session(backend, ray_address):  # one Ray connection for the sweeps and the reference points
                result = evaluate(wl, emu, names, settings, arrow_config=acfg, oracle_config=ocfg, jobs=jobs,
                                  reference_rate=reference_rate, timeline_controller=timeline_controller,
                                  progress=on_point, backend=backend, ray_address=ray_address)
        except ValueError as exc:
            _fail(str(exc))
            return
        bar.update(task, total=bar.tasks[0].completed, description="done")

    table = Table(title=f"Serving rate at ≥90% SLO attainment — {wl.name}")
    table.add_column("controller")
    table.add_column("serving rate (req/s)", justify="right")
    table.add_column("ratio to arrow", justify="right")
    table.add_column(f"attainment @ {result.reference_rate:.3g} req/s", justify="right")
    table.add_column("flips/min", justify="right")
    for name, row in result.controllers.items():
        ratio = result.ratio_to(name)
        att = row.attainment_at(result.reference_rate)
        label = f"{name} ({row.best_split.label})" if row.best_split is not None else name
        table.add_row(label, f"{row.serving_rate:.3f}", "-" if ratio is None else f"{ratio:.2f}x",
                      "-" if att is None else f"{100 * att:.1f}%", f"{row.flips_per_min:.2f}")
    console.print(table)

    payload = result.to_json()
    payload["settings"].update({"preset": preset, "workload": workload, "slo_ttft_s": slo_ttft, "slo_tpot_s": slo_tpot,
                                "start_s": start, "duration_s": duration, "rate_mode": rate_mode,
                                "warmup_s": warmup, "span_s": span if rate_mode == "superpose" else None})
    if plots is not None:
        from arrow_rl.evaluation.plots import plot_attainment, plot_timeline

        plots.mkdir(parents=True, exist_ok=True)
        files = [str(plot_attainment(result, plots / "attainment_vs_rate.png"))]
        if result.timeline is not None and result.timeline.timeline:
            files.append(str(plot_timeline(result.timeline, emu.slo, instances, plots / "timeline.png",
                                           title=f"{result.timeline_controller} on {wl.name} at its serving rate",
                                           time_scale=result.timeline_scale)))
        payload["plots"] = files
        console.print("plots: " + ", ".join(files))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(payload, indent=2, default=_json_default), encoding="utf-8")
        console.print(f"wrote {json_out}")


def _session(backend: str, ray_address: Optional[str]):  # noqa: ANN202 - a context manager
    import contextlib

    if backend != "ray":
        return contextlib.nullcontext()
    from arrow_rl.evaluation.ray_backend import ray_session

    return ray_session(ray_address)


def _checkpoint_warnings(spec: str, preset: str, instances: int, slo_ttft: float, slo_tpot: float) -> list[str]:
    """Where a checkpoint controller is evaluated outside its training distribution (no unpickling)."""
    path = Path(spec)
    if not (path / "metadata.json").is_file():
        return []
    from arrow_rl.controllers.registry import checkpoint_warnings

    return checkpoint_warnings(str(path), preset=preset, num_instances=instances, slo_ttft_s=slo_ttft,
                               slo_tpot_s=slo_tpot)


def _json_default(o: object) -> object:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if hasattr(o, "value"):
        return o.value  # enums
    return str(o)
