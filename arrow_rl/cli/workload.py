"""``arrow-rl workload``: inspect traces and write synthetic workloads as canonical CSV."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn, Optional

import typer
from pydantic import ValidationError
from arrow_rl.cli.output import fail, make_console
from rich.table import Table

from arrow_rl.workload.bundled import bundled_trace_names
from arrow_rl.workload.generators import (GENERATOR_KINDS, format_validation_error, generate, load_spec,
                                         parse_spec)
from arrow_rl.workload.loaders import FORMATS, TraceFormatError, load_trace
from arrow_rl.workload.stats import summarize
from arrow_rl.workload.workload import Workload

workload_app = typer.Typer(help="Inspect request traces and generate synthetic workloads.",
                           no_args_is_help=True)
console = make_console()


def _fail(message: str) -> NoReturn:
    fail(message)


@workload_app.command("info")
def info(
    trace: str = typer.Argument(..., help=f"trace file or bundled name ({', '.join(bundled_trace_names())})"),
    format: Optional[str] = typer.Option(None, "--format", help=f"one of {', '.join(FORMATS)}; default: detect"),
    rate_scale: float = typer.Option(1.0, "--rate-scale", help="multiply the request rate (divides timestamps, Arrow §6.1)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the statistics as JSON"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write a PNG: arrival rate over time and token histograms"),
) -> None:
    """Rows, span, rate, burstiness and token statistics of a trace (as in the traces README)."""
    try:
        loaded = load_trace(trace, format=format)
        workload = loaded.workload.scaled(rate_scale) if rate_scale != 1.0 else loaded.workload
    except (TraceFormatError, FileNotFoundError, IsADirectoryError, ValueError) as exc:
        _fail(str(exc))
        return
    stats = summarize(workload)
    report = loaded.report

    table = Table(title=f"{workload.name}  ({report.format}, {report.path})", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("rows", f"{stats.rows:,} kept of {report.rows_read:,} read")
    for note in report.notes():
        table.add_row("loader", note)
    table.add_row("span", f"{stats.span_s:,.1f} s ({stats.span_s / 3600:.2f} h)")
    table.add_row("mean rate", f"{stats.mean_rate:.2f} req/s" + (f" (x{rate_scale:g})" if rate_scale != 1.0 else ""))
    table.add_row("interarrival CV", f"{stats.interarrival_cv:.2f}")
    table.add_row("dispersion @1 s", f"{stats.dispersion_1s:.2f} (max {stats.max_per_second} req in one second)")
    for label, t in (("input tokens", stats.input), ("output tokens", stats.output)):
        table.add_row(label, f"mean {t.mean:.1f} / median {t.median:g} / p90 {t.p90:.0f} / "
                             f"p99 {t.p99:.0f} / max {t.max}")
    console.print(table)

    if json_out is not None:
        payload = {"name": workload.name, "format": report.format, "path": report.path,
                   "rows_read": report.rows_read, "dropped": report.dropped, "clamped": report.clamped,
                   "reordered": report.reordered, "rate_scale": rate_scale, **stats.to_dict()}
        json_out.write_text(json.dumps(payload, indent=2))
    if plot is not None:
        _plot(workload, plot)
        console.print(f"plot written to {plot}")


def _plot(workload: Workload, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    span = max(workload.duration_s, 1e-9)
    bin_s = max(1.0, span / 200.0)
    counts = np.bincount(np.floor(workload.arrival_s / bin_s).astype(np.int64))
    axes[0].step(np.arange(counts.size) * bin_s, counts / bin_s, where="post")
    axes[0].set(xlabel="time (s)", ylabel=f"req/s ({bin_s:.0f} s bins)", title="arrival rate")
    for ax, col, label in ((axes[1], workload.input_tokens, "input"), (axes[2], workload.output_tokens, "output")):
        ax.hist(col, bins=np.logspace(0, np.log10(max(int(col.max()), 2)), 50))
        ax.set(xscale="log", xlabel=f"{label} tokens", ylabel="requests", title=f"{label} length")
    fig.suptitle(workload.name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pair(text: str, option: str) -> tuple[float, float]:
    try:
        a, b = text.split(":")
        return float(a), float(b)
    except ValueError:
        _fail(f"{option} expects A:B (two numbers), got {text!r}")
        raise


@workload_app.command("generate")
def generate_cmd(
    output: Path = typer.Option(..., "-o", "--output", help="canonical CSV to write"),
    spec_path: Optional[Path] = typer.Option(None, "--spec", help="YAML spec (see configs/workloads/); overrides --kind"),
    kind: Optional[str] = typer.Option(None, "--kind", help=f"one of {', '.join(GENERATOR_KINDS)}"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1),
    rate: Optional[float] = typer.Option(None, "--rate", help="req/s (poisson, gamma, phase_shift)"),
    duration: Optional[float] = typer.Option(None, "--duration", help="seconds"),
    cv: Optional[float] = typer.Option(None, "--cv", help="interarrival CV (gamma, phase_shift)"),
    stage: Optional[list[str]] = typer.Option(None, "--stage", help="RATE:SECONDS, repeat for each stage (stages)"),
    rates: Optional[str] = typer.Option(None, "--rates", help="CALM:BURST req/s (mmpp)"),
    dwell: Optional[str] = typer.Option(None, "--dwell", help="CALM:BURST mean seconds in each state (mmpp)"),
    phase_s: Optional[float] = typer.Option(None, "--phase-s", help="seconds per phase (phase_shift)"),
    input_mean: Optional[float] = typer.Option(None, "--input-mean", help="lognormal input mean tokens"),
    input_cv: float = typer.Option(1.0, "--input-cv"),
    output_mean: Optional[float] = typer.Option(None, "--output-mean", help="lognormal output mean tokens"),
    output_cv: float = typer.Option(1.0, "--output-cv"),
    lengths_from: Optional[str] = typer.Option(None, "--lengths-from", help="resample (input, output) pairs from this trace"),
    name: Optional[str] = typer.Option(None, "--name"),
) -> None:
    """Write a seeded synthetic workload as canonical CSV (same seed, same file)."""
    try:
        if spec_path is not None:
            spec = load_spec(spec_path)
            if name:
                spec = spec.model_copy(update={"name": name})
        else:
            if kind is None:
                _fail("give --kind or --spec")
            data: dict = {"kind": kind, "name": name}
            for key, value in (("rate", rate), ("duration_s", duration), ("cv", cv), ("phase_s", phase_s)):
                if value is not None:
                    data[key] = value
            if stage:
                data["stages"] = [list(_pair(s, "--stage")) for s in stage]
            if rates:
                data["rates"] = _pair(rates, "--rates")
            if dwell:
                data["mean_dwell_s"] = _pair(dwell, "--dwell")
            if lengths_from:
                data["mix"] = {"trace": lengths_from}
            elif input_mean is not None or output_mean is not None:
                data["mix"] = {
                    "input": {"kind": "lognormal", "mean": input_mean or 1024, "cv": input_cv, "max_tokens": 16384},
                    "output": {"kind": "lognormal", "mean": output_mean or 200, "cv": output_cv, "max_tokens": 4096},
                }
            spec = parse_spec(data)
        workload = generate(spec, seed)
    except ValidationError as exc:
        _fail(f"invalid workload spec:\n{format_validation_error(exc)}")
        return
    except (TraceFormatError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    workload.to_csv(output)
    stats = summarize(workload)
    console.print(f"wrote {output}: {stats.rows:,} requests over {stats.span_s:,.1f} s "
                  f"({stats.mean_rate:.2f} req/s, interarrival CV {stats.interarrival_cv:.2f}; "
                  f"input mean {stats.input.mean:.0f}, output mean {stats.output.mean:.0f} tokens)")


def register(app: typer.Typer) -> None:
    app.add_typer(workload_app, name="workload")
