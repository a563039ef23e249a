"""``arrow-rl simulate``: replay one workload through one emulated cluster and summarise latencies.

Contract (external checks use these names):
    arrow-rl simulate --preset P --instances N --mode colocated|disaggregated [--prefill-instances P]
        [--max-num-batched-tokens T] [--max-num-seqs S] --workload TRACE [--format F] [--rate-scale X]
        [--slo-ttft S --slo-tpot S] [--router least-loaded|round-robin] [--seed K] [--json OUT.json]
or ``--config cluster.yaml`` (an ``EmulatorConfig``) with the same options overriding its fields.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from arrow_rl.cli.output import fail, make_console

from arrow_rl.cli.summary_table import print_summary

console = make_console()


def _fail(message: str) -> NoReturn:
    fail(message)


def simulate(
    preset: Optional[str] = typer.Option(None, "--preset", help="instance type, e.g. h100-llama3.1-8b-tp1"),
    instances: Optional[int] = typer.Option(None, "--instances", help="number of instances"),
    mode: Optional[str] = typer.Option(None, "--mode", help="colocated | disaggregated"),
    prefill_instances: Optional[int] = typer.Option(
        None, "--prefill-instances", help="instances labelled prefill at start (disaggregated; default half)"),
    mixed_instances: Optional[int] = typer.Option(
        None, "--mixed-instances", help="instances labelled mixed at start (disaggregated): they serve whole "
                                        "requests like colocated ones; the last ones (default 0)"),
    mixed_policy: str = typer.Option("cost", "--mixed-policy",
                                     help="with mixed instances, which requests go to them: cost | fraction | "
                                          "prompt-threshold (docs/design_mixed_role.md)"),
    max_num_batched_tokens: Optional[int] = typer.Option(None, "--max-num-batched-tokens",
                                                         help="vLLM token budget per iteration (default: vLLM serve's on the preset's GPU, 8192 on H100)"),
    max_num_seqs: Optional[int] = typer.Option(None, "--max-num-seqs", help="vLLM running-sequence limit (default: vLLM serve's on the preset's GPU, 1024 on H100)"),
    workload: str = typer.Option(..., "--workload", help="trace file (canonical CSV, Azure CSV, Mooncake JSONL, "
                                                         "BurstGPT CSV) or bundled name (azure-conv, azure-code, mooncake)"),
    format: Optional[str] = typer.Option(None, "--format", help="trace format; default: detected from content"),
    rate_scale: float = typer.Option(1.0, "--rate-scale", help="multiply the request rate by X (divides timestamps, Arrow §6.1)"),
    slo_ttft: Optional[float] = typer.Option(None, "--slo-ttft", help="TTFT SLO in seconds (give with --slo-tpot)"),
    slo_tpot: Optional[float] = typer.Option(None, "--slo-tpot", help="TPOT SLO in seconds (give with --slo-ttft)"),
    router: str = typer.Option("least-loaded", "--router", help="request router: least-loaded | round-robin"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, help="seed (the run is deterministic for a seed)"),
    flip_delay: Optional[float] = typer.Option(None, "--flip-delay", help="seconds an instance admits nothing after a flip"),
    gpu_memory_utilization: Optional[float] = typer.Option(None, "--gpu-memory-utilization", help="default 0.9"),
    config: Optional[Path] = typer.Option(None, "--config", help="cluster YAML (EmulatorConfig fields); options override it"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the summary as JSON"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write a PNG: TTFT/TPOT over time and their CDFs"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Simulate one workload on one cluster; print TTFT/TPOT/e2e percentiles, SLO attainment, throughput."""
    from arrow_rl.cluster.emulator import EmulatedCluster

    _check_numbers(rate_scale, slo_ttft, slo_tpot)
    options = {"preset": preset, "num_instances": instances, "mode": mode, "num_prefill": prefill_instances,
               "num_mixed": mixed_instances, "max_num_batched_tokens": max_num_batched_tokens,
               "max_num_seqs": max_num_seqs, "slo_ttft_s": slo_ttft, "slo_tpot_s": slo_tpot,
               "flip_delay_s": flip_delay, "gpu_memory_utilization": gpu_memory_utilization}
    cfg = _emulator_config(config, options)
    rt = _router(router, mixed_policy if cfg.num_mixed else None)
    wl = _workload(workload, format, rate_scale)
    cluster = EmulatedCluster(wl, cfg, router=rt, seed=seed)
    wall = _run(cluster, float(wl.arrival_s[-1]), show=not quiet and console.is_terminal)
    records = cluster.completed()
    summary = _summary(records, cluster, cfg, wl, wall, {"router": router, "seed": seed, "workload": wl.name,
                                                         "rate_scale": rate_scale})
    _print(summary, cfg, wl)
    _write_outputs(summary, records, cfg, wl, json_out, plot)


# EmulatorConfig field -> the option that sets it (error messages name the option)
OPTION_OF = {"preset": "--preset", "num_instances": "--instances", "mode": "--mode",
             "num_prefill": "--prefill-instances", "num_mixed": "--mixed-instances",
             "max_num_batched_tokens": "--max-num-batched-tokens",
             "max_num_seqs": "--max-num-seqs", "slo_ttft_s": "--slo-ttft", "slo_tpot_s": "--slo-tpot",
             "flip_delay_s": "--flip-delay", "gpu_memory_utilization": "--gpu-memory-utilization"}


def _check_numbers(rate_scale: float, slo_ttft: Optional[float], slo_tpot: Optional[float]) -> None:
    if rate_scale is None or not rate_scale > 0 or not math.isfinite(rate_scale):
        _fail(f"--rate-scale must be a positive number, got {rate_scale}")
    if (slo_ttft is None) != (slo_tpot is None):
        _fail("give both --slo-ttft and --slo-tpot, or neither")
    for name, val in (("--slo-ttft", slo_ttft), ("--slo-tpot", slo_tpot)):
        if val is not None and not val > 0:
            _fail(f"{name} must be > 0 seconds, got {val}")


def _emulator_config(config: Optional[Path], options: dict[str, Any]) -> Any:
    """The ``EmulatorConfig``: ``--config``'s fields, overridden by the options given; errors name
    the option (or the file's field) at fault."""
    from pydantic import ValidationError

    from arrow_rl.cluster.emulator import EmulatorConfig
    from arrow_rl.cluster.emulator.config import format_validation_error

    fields: dict[str, Any] = {}
    if config is not None:
        try:
            fields = EmulatorConfig.from_yaml(config).model_dump(exclude_unset=True)
        except ValueError as exc:
            _fail(str(exc))
    fields.update({k: v for k, v in options.items() if v is not None})
    for key in ("preset", "num_instances"):
        if key not in fields:
            _fail(f"{OPTION_OF[key]} is required (or give it in --config)")
    if str(getattr(fields.get("mode"), "value", fields.get("mode"))) == "colocated" and fields.get("num_prefill") is not None:
        # colocated instances have no prefill/decode label; a split given with it is a mistake
        where = "--prefill-instances" if options["num_prefill"] is not None else f"{config}: num_prefill"
        _fail(f"{where} applies to --mode disaggregated only; colocated instances serve whole requests")
    try:
        return EmulatorConfig(**fields)
    except ValidationError as exc:
        msg = format_validation_error(exc)
        for key, opt in OPTION_OF.items():
            msg = msg.replace(f"{key}:", f"{opt}:")
        _fail(("" if config is None else f"{config}: ") + msg)
    except ValueError as exc:
        _fail(str(exc))


def _router(router: str, mixed_policy: Optional[str]) -> Any:
    """The request router; with mixed instances (``mixed_policy`` given) wrapped in the MIXED
    dispatcher, which splits requests between the router's P/D path and the MIXED pool."""
    from arrow_rl.routing import make_router, router_names

    try:
        rt = make_router(router)
    except ValueError:
        _fail(f"--router: unknown router {router!r}; valid routers: {', '.join(router_names())}")
    if mixed_policy is None:
        return rt
    from arrow_rl.arrow.mixed import MixedConfig, MixedDispatcher

    try:
        return MixedDispatcher(rt, MixedConfig.from_mapping({"mixed_policy": mixed_policy}, "--mixed-policy"))
    except ValueError as exc:
        _fail(str(exc))


def _workload(workload: str, format: Optional[str], rate_scale: float) -> Any:
    from arrow_rl.workload.loaders import TraceFormatError, load_workload

    try:
        wl = load_workload(workload, format=format)
        if rate_scale != 1.0:
            wl = wl.scaled(rate_scale)
    except (TraceFormatError, FileNotFoundError, IsADirectoryError, ValueError, KeyError) as exc:
        _fail(f"--workload: {exc}")
    if len(wl) == 0:
        _fail(f"--workload: {workload!r} has no requests")
    return wl


def _run(cluster: Any, span: float, show: bool) -> float:
    """Run the cluster to the end (a progress bar in simulated seconds when ``show``); wall seconds."""
    wall0 = time.perf_counter()
    if show:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("simulating"), BarColumn(), TextColumn("{task.fields[t]}"),
                      TimeElapsedColumn(), console=console, transient=True) as bar:
            task = bar.add_task("sim", total=max(span, 1e-9), t="")
            cluster.run_until_done(progress=lambda now: bar.update(
                task, completed=min(now, span), t=f"{now:,.0f}/{span:,.0f} s simulated"))
    else:
        cluster.run_until_done()
    return time.perf_counter() - wall0


def _summary(records: list, cluster: Any, cfg: Any, wl: Any, wall: float, run: dict[str, Any]) -> dict[str, Any]:
    """The run's latency and SLO summary with the cluster's counters, ``run``'s settings and why
    requests were rejected."""
    from arrow_rl.metrics.summary import summarize

    summary = summarize(records, slo=cfg.slo if cfg.has_slo else None, num_offered=len(wl))
    summary.update({"wall_seconds": wall, "simulated_seconds": cluster.now,
                    "simulated_requests_per_second": len(wl) / wall if wall > 0 else math.inf,
                    "num_kv_transfers": cluster.num_transfers, "num_preemptions": cluster.num_preemptions,
                    "num_kv_lease_expiries": cluster.num_lease_expiries,
                    "prefix_cache_hit_rate": cluster.prefix_cache_hit_rate,
                    "prefix_cache_hit_tokens": cluster.prefix_hit_tokens,
                    "preset": cfg.preset, "mode": cfg.mode.value, "instances": cfg.num_instances,
                    "prefill_instances": cfg.prefill_count if cfg.mode.value == "disaggregated" else None,
                    "max_num_batched_tokens": cfg.max_num_batched_tokens, "max_num_seqs": cfg.max_num_seqs,
                    **run})
    reasons: dict[str, int] = {}
    for r in records:
        if r.rejected:
            key = r.reject_reason.split(":", 1)[0]
            reasons[key] = reasons.get(key, 0) + 1
    summary["reject_reasons"] = reasons
    return summary


def _write_outputs(summary: dict[str, Any], records: list, cfg: Any, wl: Any, json_out: Optional[Path],
                   plot: Optional[Path]) -> None:
    if json_out is not None:
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
        try:
            json_out.write_text(json.dumps(clean, indent=2) + "\n")
        except OSError as exc:
            _fail(f"--json: cannot write {json_out}: {exc.strerror or exc}")
        console.print(f"summary written to {json_out}")
    if plot is not None:
        try:
            _plot(records, cfg.slo if cfg.has_slo else None, plot, f"{wl.name} on {cfg.preset}, {cfg.mode.value}")
        except OSError as exc:
            _fail(f"--plot: cannot write {plot}: {exc.strerror or exc}")
        console.print(f"plot written to {plot}")


def _plot(records, slo, path: Path, title: str) -> None:
    """Per-request TTFT and TPOT against arrival time (with a 1-minute rolling p90) and their CDFs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fin = sorted((r for r in records if r.finished), key=lambda r: r.arrival_s)
    arr = np.array([r.arrival_s for r in fin])
    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    for row, (name, getter, limit) in enumerate((
            ("TTFT", lambda r: r.ttft_s, slo.ttft_s if slo else None),
            ("TPOT", lambda r: r.tpot_s, slo.tpot_s if slo else None))):
        vals = np.array([getter(r) for r in fin], dtype=float)
        ok = ~np.isnan(vals)
        ax = axes[row, 0]
        ax.scatter(arr[ok], vals[ok], s=2, alpha=0.3, label="request")
        if ok.sum() > 1:
            minute = (arr[ok] // 60).astype(int)
            mins = np.unique(minute)
            p90 = [np.percentile(vals[ok][minute == m], 90) for m in mins]
            ax.plot(mins * 60 + 30, p90, color="C1", label="p90 per minute")
        if limit:
            ax.axhline(limit, color="red", ls="--", lw=1, label="SLO")
        ax.set_yscale("log")
        ax.set_xlabel("arrival time (s)")
        ax.set_ylabel(f"{name} (s)")
        ax.legend(loc="upper left", fontsize=8)
        ax = axes[row, 1]
        v = np.sort(vals[ok])
        if v.size:
            ax.plot(v, np.arange(1, v.size + 1) / v.size)
        if limit:
            ax.axvline(limit, color="red", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel(f"{name} (s)")
        ax.set_ylabel("fraction of finished requests")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _print(s: dict[str, Any], cfg, wl) -> None:
    shape = (f"{cfg.prefill_count}P{cfg.num_instances - cfg.prefill_count}D"
             if cfg.mode.value == "disaggregated" else f"{cfg.num_instances} colocated")
    print_summary(console, s, f"{wl.name} on {cfg.preset} × {shape}", extra_rows=[
        ("KV transfers / preemptions", f"{s['num_kv_transfers']:,} / {s['num_preemptions']:,}"),
        ("prefix cache hit rate", f"{s['prefix_cache_hit_rate']:.1%} of prompt tokens"),
        ("simulated", f"{s['simulated_seconds']:,.1f} s in {s['wall_seconds']:.2f} s wall "
                      f"({s['simulated_requests_per_second']:,.0f} requests/s)"),
    ])


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
