"""The end-to-end, in-sample error of a preset on the shipped calibration runs.

``arrow-rl perf-report`` shows it next to the kernel-row errors of ``arrow_rl.perf.fit_report``; it
lives here because replaying a run needs the emulator, which ranks above ``perf``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from arrow_rl.fidelity.report import compare_runs
from arrow_rl.fidelity.runs import RealRun, load_run, preset_for


def shipped_runs_for(name: str) -> list[RealRun]:
    """The shipped real vLLM runs whose model and TP match preset ``name`` (the calibration set)."""
    root = resources.files("arrow_rl.fidelity").joinpath("data", "vllm_h100_e2e")
    runs = [load_run(str(p)) for p in sorted(root.iterdir(), key=lambda p: p.name) if p.is_dir()]
    return [r for r in runs if preset_for(r) == name]


def end_to_end_in_sample(name: str, duration_s: float | None = 300.0) -> dict[str, Any] | None:
    """Median error of the means over the shipped runs of preset ``name`` (in-sample), or None."""
    runs = shipped_runs_for(name)
    if not runs:
        return None
    rep = compare_runs(runs, preset=name, duration_s=duration_s)
    sat = rep.saturated_throughput_ape()
    return {"in_sample": True, "runs": [r.name for r in runs],
            "unsaturated_stages": sum(not s.saturated for s in rep.stages),
            "median_ape_pct": rep.median_ape(), "saturated_throughput_ape_pct": sat,
            "replayed_seconds_per_stage": duration_s}


__all__ = ["end_to_end_in_sample", "shipped_runs_for"]
