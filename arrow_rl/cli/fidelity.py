"""``arrow-rl fidelity``: replay real vLLM runs through the emulator and report the error.

    arrow-rl fidelity RUN... [--preset NAME_OR_YAML] [--json OUT] [--plot PNG] [--skip-unsupported]

A RUN is an inference-perf run folder, a per-request run folder (BLIS ``trace.csv``,
``requests.csv``, ``requests.jsonl``), a ``vllm bench serve`` result file or a folder of them
(``arrow_rl/fidelity/sources.py``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

import typer
from rich.table import Table

from arrow_rl.cli.output import fail, make_console

console = make_console()  # output redirected to a file is not cut to 80 columns


def _fail(message: str) -> NoReturn:
    fail(message)


def _fmt(x: float | None, scale: float = 1.0, digits: int = 1) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x * scale:.{digits}f}"


def _short(run_name: str) -> str:
    """A run folder's name without inference-perf's leading timestamp."""
    import re

    return re.sub(r"^\d{8}-\d{6}-", "", run_name)


def fidelity(
    runs: list[Path] = typer.Argument(..., help="run folders or files: inference-perf, per-request "
                                                "(trace.csv, requests.csv, requests.jsonl) or vllm bench serve JSON"),
    preset: Optional[str] = typer.Option(None, "--preset", help="emulator preset name or a preset YAML file; "
                                                                "default: from the run's model, TP and GPU"),
    seed: int = typer.Option(0, "--seed", help="seed for the sampled prompt lengths"),
    duration: Optional[float] = typer.Option(None, "--duration", help="replay only the first S seconds of each stage"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the comparison as JSON"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write a PNG: emulated vs real means"),
    skip_unsupported: bool = typer.Option(False, "--skip-unsupported",
                                          help="list runs the emulator cannot reproduce instead of stopping"),
    engine_constants: Optional[Path] = typer.Option(
        None, "--engine-constants", help="replay with these engine constants (an engine.json-shaped file, e.g. a "
                                         "candidate refit) instead of the shipped ones"),
) -> None:
    """Replay real vLLM serving runs on the emulator; print per-stage errors and their medians."""
    from arrow_rl.fidelity.report import compare_runs, plot_report
    from arrow_rl.fidelity.trace_run import UnsupportedRun
    from arrow_rl.perf.presets import resolve_preset_name

    if preset is not None:
        try:
            preset = resolve_preset_name(preset)
        except ValueError as exc:
            _fail(f"--preset: {exc}")
    build_preset = None if engine_constants is None else _preset_builder(engine_constants)
    if duration is not None and not (duration > 0 and math.isfinite(duration)):
        _fail(f"--duration must be a positive number of seconds, got {duration}")
    loaded, skipped = _load(runs, skip_unsupported)
    try:
        with console.status("replaying") as status:
            report = compare_runs(loaded, preset=preset, seed=seed, duration_s=duration,
                                  progress=lambda what: status.update(f"replaying {what}"),
                                  skip_unsupported=skip_unsupported, build_preset=build_preset)
    except UnsupportedRun as exc:
        _fail(f"{exc} (--skip-unsupported lists it and goes on)")
    except ValueError as exc:
        _fail(str(exc))
    report.skipped[:0] = skipped
    _print_report(report)
    if json_out is not None:
        try:
            json_out.write_text(json.dumps(report.to_json(), indent=2) + "\n")
        except OSError as exc:
            _fail(f"--json: cannot write {json_out}: {exc.strerror or exc}")
        console.print(f"comparison written to {json_out}")
    if plot is not None:
        try:
            plot_report(report, plot)
        except OSError as exc:
            _fail(f"--plot: cannot write {plot}: {exc.strerror or exc}")
        console.print(f"plot written to {plot}")


def _preset_builder(engine_constants: Path) -> Callable[[str], Any]:
    """Presets as named, with their latency model built on a candidate set of engine constants."""
    import dataclasses

    from arrow_rl.perf.engine import EngineLatencyModel, engine_constants_from_file
    from arrow_rl.perf.presets import get_preset, load_preset_document

    try:
        consts = engine_constants_from_file(str(engine_constants))
    except ValueError as exc:
        _fail(f"--engine-constants: {exc}")

    def build_preset(name: str):
        return dataclasses.replace(get_preset(name), latency=EngineLatencyModel(load_preset_document(name), consts))
    return build_preset


def _load(runs: list[Path], skip_unsupported: bool) -> tuple[list, list[str]]:
    """Every run's stages; a run the emulator cannot reproduce stops the command, or is listed and
    skipped with ``--skip-unsupported``."""
    from arrow_rl.fidelity.runs import RunFormatError
    from arrow_rl.fidelity.sources import load_runs
    from arrow_rl.fidelity.trace_run import UnsupportedRun

    loaded: list = []
    skipped: list[str] = []
    for path in runs:
        try:
            loaded.extend(load_runs(path))
        except UnsupportedRun as exc:
            if not skip_unsupported:
                _fail(f"{exc} (--skip-unsupported lists it and goes on)")
            skipped.append(str(exc))
        except RunFormatError as exc:
            _fail(str(exc))
    return loaded, skipped


def _print_report(report) -> None:
    """The per-stage table, the medians, the saturated stages' throughput errors and what was skipped."""
    table = Table(title="Emulator vs real vLLM (means; APE = absolute % error)")
    for col in ("run", "stage", "load", "preset", "TTFT ms real/sim", "TPOT ms real/sim", "e2e s real/sim",
                "APE TTFT", "APE TPOT", "APE e2e", "thr. req/s real/sim"):
        table.add_column(col, justify="right" if col not in ("run", "preset") else "left")
    for s in report.stages:
        a = s.ape
        conc = getattr(s.real, "concurrency", None)
        load = f"{s.rate:.3g}/s" + (f" ≤{conc}" if conc else "")
        row = [_short(s.run) + ("" if s.topology.startswith("1x") else f" [{s.topology}]"), str(s.stage), load,
               s.preset,
               f"{_fmt(s.real.ttft_mean, 1e3)}/{_fmt(s.sim.ttft_mean, 1e3)}",
               f"{_fmt(s.real.tpot_mean, 1e3, 2)}/{_fmt(s.sim.tpot_mean, 1e3, 2)}",
               f"{_fmt(s.real.e2e_mean, 1, 3)}/{_fmt(s.sim.e2e_mean, 1, 3)}"]
        if s.saturated:
            row += ["saturated", "", "", f"{s.real.throughput_rps:.2f}/{s.sim.throughput_rps:.2f} "
                                         f"({_fmt(a['throughput'])}%)"]
        else:
            row += [f"{_fmt(a['ttft'])}%", f"{_fmt(a['tpot'])}%", f"{_fmt(a['e2e'])}%",
                    f"{s.real.throughput_rps:.2f}/{s.sim.throughput_rps:.2f}"]
        table.add_row(*row)
    console.print(table)
    med = report.median_ape()
    n_ok = sum(not s.saturated for s in report.stages)
    console.print(f"median APE over {n_ok} unsaturated stages: TTFT {_fmt(med['ttft'])}%, "
                  f"TPOT {_fmt(med['tpot'])}%, e2e {_fmt(med['e2e'])}%")
    sat = report.saturated_throughput_ape()
    if sat:
        console.print(f"saturated stages ({len(sat)}): throughput error " + ", ".join(f"{x:.1f}%" for x in sat))
    for note in report.skipped:
        console.print(f"skipped: {note}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("fidelity")(fidelity)
