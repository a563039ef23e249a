"""Plots of an evaluation: attainment vs request rate per controller, and one run's timeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: CI, servers
import matplotlib.pyplot as plt  # noqa: E402

from arrow_rl.cluster.base import SLO  # noqa: E402
from arrow_rl.evaluation.evaluate import EvaluationResult  # noqa: E402
from arrow_rl.evaluation.runner import RunResult  # noqa: E402


def plot_attainment(result: EvaluationResult, path: str | Path, target: float = 0.9) -> Path:
    """SLO attainment (both SLOs, §6.1) against request rate, one line per controller; the
    serving rate of each is where its line last stays above the 90% target."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, row in result.controllers.items():
        pts = sorted(row.attainment.items())
        if not pts:
            continue
        label = f"{name} ({row.best_split.label})" if row.best_split is not None else name
        line, = ax.plot([r for r, _ in pts], [100 * a for _, a in pts], marker="o", ms=3, label=label)
        if row.serving_rate > 0:
            ax.axvline(row.serving_rate, color=line.get_color(), ls=":", lw=0.8)
    ax.axhline(100 * target, color="grey", ls="--", lw=0.8, label=f"{100 * target:g}% target (Arrow §6.1)")
    ax.set_xlabel("request rate (req/s)")
    ax.set_ylabel("SLO attainment (%)")
    ax.set_ylim(0, 102)
    ax.set_title(f"{result.workload}: attainment vs rate (dotted: serving rate)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_timeline(run: RunResult, slo: SLO, num_instances: int, path: str | Path, title: str = "",
                  time_scale: float | None = None) -> Path:
    """Prefill/decode split over time with the window TTFT and TPOT against their SLOs.

    ``time_scale``: the rate scale the run's trace was replayed at (timestamps divided by it,
    Arrow §6.1); the x-axis then says so, since simulated seconds are not trace seconds. TPOT
    is drawn only for windows where a request finished (a gap, not 0, elsewhere).
    """
    path = Path(path)
    tl = run.timeline
    t = [p.t for p in tl]
    nan = float("nan")
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    # Solid thick prefill under thin dashed decode: both stay visible where the counts coincide.
    axes[0].step(t, [p.num_prefill for p in tl], where="post", lw=2.4, alpha=0.6, label="prefill instances")
    axes[0].step(t, [num_instances - p.num_prefill for p in tl], where="post", lw=1.2, ls="--",
                 label="decode instances")
    ax0b = axes[0].twinx()
    ax0b.plot(t, [p.arrivals for p in tl], color="grey", alpha=0.4, lw=0.8)
    ax0b.set_ylabel("arrivals / interval", color="grey")
    axes[0].set_ylabel("instances")
    axes[0].set_ylim(0, num_instances)
    axes[0].legend(fontsize=8, loc="upper left")
    axes[1].plot(t, [p.ttft_mean for p in tl], label="TTFT mean")
    axes[1].plot(t, [p.ttft_p90 for p in tl], label="TTFT p90", alpha=0.6)
    axes[1].axhline(slo.ttft_s, color="red", ls="--", lw=0.8, label="TTFT SLO")
    axes[1].set_ylabel("TTFT (s)")
    axes[1].legend(fontsize=8, loc="upper left")
    axes[2].plot(t, [p.tpot_mean if p.finished > 0 else nan for p in tl], label="TPOT mean (finished)")
    axes[2].plot(t, [p.itl_mean for p in tl], label="inter-token gap", alpha=0.6)
    axes[2].axhline(slo.tpot_s, color="red", ls="--", lw=0.8, label="TPOT SLO")
    axes[2].set_ylabel("TPOT (s)")
    axes[2].set_xlabel("simulated time (s)" if not time_scale or time_scale == 1 else
                       f"simulated time (s); trace timestamps ÷ {time_scale:.3g} (Arrow §6.1), "
                       f"trace time = {time_scale:.3g} × this")
    axes[2].legend(fontsize=8, loc="upper left")
    fig.suptitle(title or f"{run.policy}: attainment {100 * run.attainment:.1f}%, {len(run.flips)} flips")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_attainment_seeds(result: Any, path: str | Path, target: float = 0.9) -> Path:
    """SLO attainment against offered load for every controller of a one-scenario suite result:
    the mean attainment over seeds at each load of the common factor grid that every seed probed
    (error bars: min to max over seeds), and each controller's serving rate as a band (mean and 95%
    interval over seeds). Loads are on a log axis, so the grid's points are evenly spaced."""
    import math

    from arrow_rl.evaluation.crossing import GRID_RATIO

    path = Path(path)
    (name, sc), = list(result.scenarios.items())[:1]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    base = sc.scenario.source.base_rate
    for c, outcome in sc.controllers.items():
        seeds = outcome.seeds
        on_grid: dict[int, list[float]] = {}
        for s in seeds:
            for k, att in s.points.items():
                i = math.log(k) / math.log(GRID_RATIO)
                if abs(i - round(i)) < 1e-6:
                    on_grid.setdefault(int(round(i)), []).append(att)
        rows = sorted((i, v) for i, v in on_grid.items() if len(v) >= max(2, len(seeds) // 2))
        if not rows:
            continue
        xs = [GRID_RATIO ** i * base for i, _ in rows]
        ys = [100 * sum(v) / len(v) for _, v in rows]
        err = [[y - 100 * min(v) for y, (_, v) in zip(ys, rows)], [100 * max(v) - y for y, (_, v) in zip(ys, rows)]]
        line = ax.errorbar(xs, ys, yerr=err, marker="o", ms=3, capsize=2, label=f"{c} ({len(seeds)} seeds)")
        iv = outcome.interval
        if iv.mean > 0:
            colour = line[0].get_color()
            ax.axvline(iv.mean, color=colour, ls=":", lw=0.8)
            if math.isfinite(iv.hi):
                ax.axvspan(max(iv.lo, 1e-9), iv.hi, color=colour, alpha=0.08)
    ax.axhline(100 * target, color="grey", ls="--", lw=0.8, label=f"{100 * target:g}% target (Arrow §6.1)")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("offered request rate (req/s; counted span)")
    ax.set_ylabel("SLO attainment (%)")
    ax.set_ylim(0, 102)
    ax.set_title(f"{name}: mean attainment over seeds (bars: range), serving rate dotted with its 95% CI band;\n"
                 "runs that surely fail stop early, so points below the target are upper bounds", fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
