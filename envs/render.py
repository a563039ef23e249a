"""``render()`` for ``PDClusterEnv``: the episode's prefill/decode split and latencies over time."""

from __future__ import annotations

import numpy as np

from arrow_rl.cluster.base import SLO


def render_timeline(timeline: dict[str, list[float]], slo: SLO, num_instances: int, title: str = "") -> np.ndarray:
    """An RGB array (H, W, 3, uint8): top panel prefill-instance count, bottom panel p90 TTFT and
    mean TPOT relative to their SLOs (dashed line = SLO). Matplotlib's Agg backend, no display."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = np.asarray(timeline.get("t", []), dtype=float)
    fig = Figure(figsize=(8, 4.5), dpi=80)
    canvas = FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    if t.size:
        ax1.step(t, timeline["num_prefill"], where="post", color="tab:blue", label="prefill instances")
        ax1.step(t, num_instances - np.asarray(timeline["num_prefill"]), where="post", color="tab:orange",
                 label="decode instances")
        ax2.plot(t, np.asarray(timeline["ttft_p90"]) / slo.ttft_s, color="tab:blue", label="TTFT p90 / SLO")
        tpot = np.asarray(timeline["tpot_mean"], dtype=float)
        itl = np.asarray(timeline["itl_mean"], dtype=float)
        ax2.plot(t, np.where(tpot > 0, tpot, itl) / slo.tpot_s, color="tab:orange", label="TPOT mean / SLO")
    ax1.set_ylim(0, num_instances)
    ax1.set_ylabel("instances")
    ax1.legend(loc="upper right", fontsize=7)
    ax2.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    ax2.set_yscale("symlog", linthresh=1.0)
    ax2.set_ylabel("latency / SLO")
    ax2.set_xlabel("cluster time (s)")
    ax2.legend(loc="upper right", fontsize=7)
    if title:
        ax1.set_title(title, fontsize=9)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
