"""Plot of a one-scenario suite result (``arrow-rl evaluate``): attainment against offered load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: CI, servers
import matplotlib.pyplot as plt  # noqa: E402


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
