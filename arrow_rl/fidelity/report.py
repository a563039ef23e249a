"""Compare real runs with their emulated replays: per-stage errors and the median over stages.

Unsaturated stages are judged on the means of TTFT, TPOT and e2e latency (absolute percentage error,
APE); saturated stages (requests failed or did not finish) on throughput, reported apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from arrow_rl.fidelity.replay import SimStage, replay_stage
from arrow_rl.fidelity.runs import RealRun, RealStage, preset_for
from arrow_rl.fidelity.trace_replay import replay_trace
from arrow_rl.fidelity.trace_run import TraceRun, TraceStage, UnsupportedRun

if TYPE_CHECKING:
    from arrow_rl.perf.preset import Preset

METRICS = ("ttft", "tpot", "e2e")


def ape(sim: float, real: float) -> float:
    """Absolute percentage error of ``sim`` against ``real`` (percent)."""
    return abs(sim - real) / abs(real) * 100.0 if real else math.nan


@dataclass(frozen=True)
class StageResult:
    run: str
    stage: int
    preset: str
    rate: float
    saturated: bool
    real: RealStage | TraceStage
    sim: SimStage
    kind: str = "inference-perf"
    topology: str = "1x colocated"

    @property
    def ape(self) -> dict[str, float]:
        return {"ttft": ape(self.sim.ttft_mean, self.real.ttft_mean),
                "tpot": ape(self.sim.tpot_mean, self.real.tpot_mean),
                "e2e": ape(self.sim.e2e_mean, self.real.e2e_mean),
                "throughput": ape(self.sim.throughput_rps, self.real.throughput_rps)}

    def to_json(self) -> dict[str, Any]:
        r, s = self.real, self.sim
        a = self.ape
        return {"run": self.run, "stage": self.stage, "preset": self.preset, "rate": self.rate,
                "saturated": self.saturated, "format": self.kind, "topology": self.topology,
                "concurrency": getattr(r, "concurrency", None),
                "real": {"ttft_mean": r.ttft_mean, "tpot_mean": r.tpot_mean, "e2e_mean": r.e2e_mean,
                         "throughput_rps": r.throughput_rps},
                "sim": {"ttft_mean": _num(s.ttft_mean), "tpot_mean": _num(s.tpot_mean),
                        "e2e_mean": _num(s.e2e_mean), "throughput_rps": s.throughput_rps},
                "ape": {k: _num(a[k]) for k in (*METRICS, "throughput")}}


def _num(x: float) -> float | None:
    return None if isinstance(x, float) and not math.isfinite(x) else x


@dataclass
class FidelityReport:
    stages: list[StageResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # runs the emulator cannot reproduce, and why

    def median_ape(self) -> dict[str, float]:
        """Median APE of the means over unsaturated stages (NaN when there are none). A stage whose
        real figure is 0 has no APE for it (TPOT of one-token outputs) and is left out of that median."""
        ok = [s for s in self.stages if not s.saturated]
        out = {}
        for k in METRICS:
            vals = [s.ape[k] for s in ok if math.isfinite(s.ape[k])]
            out[k] = float(np.median(vals)) if vals else math.nan
        return out

    def saturated_throughput_ape(self) -> list[float]:
        return [s.ape["throughput"] for s in self.stages if s.saturated and math.isfinite(s.ape["throughput"])]

    def to_json(self) -> dict[str, Any]:
        sat = self.saturated_throughput_ape()
        return {"stages": [s.to_json() for s in self.stages], "skipped": list(self.skipped),
                "median_ape": {k: _num(v) for k, v in self.median_ape().items()},
                "saturated_throughput_ape": {"max": max(sat) if sat else None,
                                             "median": float(np.median(sat)) if sat else None}}


def resolve_preset(run: RealRun | TraceRun, override: str | None) -> str:
    """``override`` if given, else the preset matching the run's model and TP; a clear error otherwise."""
    if override is not None:
        return override
    preset = preset_for(run)
    if preset is None:
        raise ValueError(f"{run.path}: no preset matches model {run.model!r} at tensor parallelism "
                         f"{run.tensor_parallelism}; pass --preset")
    return preset


def compare_runs(runs: Sequence[RealRun | TraceRun], preset: str | None = None, seed: int = 0,
                 duration_s: float | None = None,
                 progress: Callable[[str], None] | None = None,
                 skip_unsupported: bool = False,
                 build_preset: "Callable[[str], Preset] | None" = None) -> FidelityReport:
    """Replay every stage of every run and collect the comparison.

    ``skip_unsupported``: a run the emulator cannot reproduce (``UnsupportedRun``) is listed in
    ``report.skipped`` instead of stopping the comparison. ``build_preset(name)``: the preset to
    replay on instead of the named one (a candidate latency model while fitting)."""
    report = FidelityReport()
    for run in runs:
        try:
            name = resolve_preset(run, preset)
        except ValueError as exc:
            if not (skip_unsupported and isinstance(run, TraceRun)):
                raise
            report.skipped.append(str(exc))
            continue
        if isinstance(run, TraceRun):
            if progress is not None:
                progress(f"{run.name} ({run.kind}, {run.topology.label()}) on {name}")
            try:
                sim = replay_trace(run, name if build_preset is None else build_preset(name), seed=seed,
                                   duration_s=duration_s)
            except UnsupportedRun as exc:
                if not skip_unsupported:
                    raise
                report.skipped.append(str(exc))
                continue
            st = run.stage
            report.stages.append(StageResult(run.name, 0, name, st.rate, st.saturated, st, sim, run.kind,
                                             run.topology.label()))
            continue
        for stage in run.stages:
            if progress is not None:
                progress(f"{run.name} stage {stage.index} ({stage.rate:g} req/s) on {name}")
            sim = replay_stage(run, stage, name if build_preset is None else build_preset(name), seed=seed,
                               duration_s=duration_s, timeout_s=stage.failure_latency_min)
            report.stages.append(StageResult(run.name, stage.index, name, stage.rate, stage.saturated,
                                             stage, sim))
    return report


def plot_report(report: FidelityReport, path: Path) -> None:
    """Real vs emulated means, one point per unsaturated stage, with the y = x line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [s for s in report.stages if not s.saturated]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    getters = {"ttft": ("TTFT mean (ms)", lambda x: x.ttft_mean * 1e3),
               "tpot": ("TPOT mean (ms)", lambda x: x.tpot_mean * 1e3),
               "e2e": ("e2e mean (s)", lambda x: x.e2e_mean)}
    for ax, key in zip(axes, METRICS):
        label, get = getters[key]
        presets = sorted({s.preset for s in ok})
        for i, p in enumerate(presets):
            pts = [s for s in ok if s.preset == p]
            ax.scatter([get(s.real) for s in pts], [get(s.sim) for s in pts], color=f"C{i}", label=p)
        vals = [get(s.real) for s in ok] + [get(s.sim) for s in ok]
        vals = [v for v in vals if math.isfinite(v)]
        if vals:
            lo, hi = min(vals) * 0.9, max(vals) * 1.1
            ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="emulated = real")
        med = report.median_ape()[key]
        ax.set_title(f"{label}: median error {med:.1f}%")
        ax.set_xlabel(f"real vLLM {label}")
        ax.set_ylabel(f"emulated {label}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Emulator vs real vLLM, unsaturated stages")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["FidelityReport", "METRICS", "StageResult", "ape", "compare_runs", "plot_report", "resolve_preset"]
