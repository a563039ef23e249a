"""Error of a preset's latency model: end to end against real vLLM runs, and per kernel.

Two kinds of figures, labelled as such in the report:

* **End to end, in-sample** (presets with shipped real runs, ``arrow_rl/fidelity/data``): the engine
  model's global constants are fitted on those runs, so their error is the calibration error. The
  caller passes it in (``arrow_rl.fidelity.calibration``).
* **Kernel rows, out-of-sample**: measured per-operation times copied from public profiles
  (``data/profile_rows/<preset>.csv``, Vidur / LLMServingSim, eager kernels), compared with the same
  component of the model. The engine model is not fitted on them; they check that its roofline
  terms have the right shape. ``xcheck_*`` rows come from a second source and are reported apart.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from arrow_rl.perf.anchors import anchors_for
from arrow_rl.perf.engine import EngineLatencyModel, chunked_prefill_time
from arrow_rl.perf.preset import Preset
from arrow_rl.perf.presets import get_preset
from arrow_rl.perf.profile import InstanceProfile, profile_instance

DEFAULT_TPOT_SLOS_S: tuple[float, ...] = (0.025, 0.05, 0.1, 0.2)


@dataclass
class ComponentError:
    component: str
    rows: int
    median_pct: float
    p90_pct: float
    source: str


@dataclass
class FitReport:
    preset: str
    components: list[ComponentError]
    overall_rows: int
    overall_median_pct: float
    overall_p90_pct: float
    anchors: list[dict[str, Any]]
    profile: InstanceProfile
    max_tokens: dict[float, float]
    facts: dict[str, Any] = field(default_factory=dict)
    e2e: dict[str, Any] | None = None   # in-sample end-to-end error on the shipped real runs

    def to_dict(self) -> dict[str, Any]:
        return dict(
            preset=self.preset,
            profile_rows=dict(rows=self.overall_rows, median_abs_pct_error=self.overall_median_pct,
                              p90_abs_pct_error=self.overall_p90_pct,
                              components=[c.__dict__ for c in self.components]),
            end_to_end_in_sample=self.e2e,
            anchors=self.anchors,
            arrow_profile=dict(prefill_a=self.profile.prefill_a, prefill_b=self.profile.prefill_b,
                               prefill_c=self.profile.prefill_c, decode_slope=self.profile.decode_slope,
                               decode_intercept=self.profile.decode_intercept,
                               max_tokens={str(k): v for k, v in self.max_tokens.items()}),
            facts=self.facts,
        )


def load_profile_rows(name: str) -> list[dict[str, Any]]:
    """The measured rows shipped for preset ``name`` (none for presets built from a shape alone)."""
    path = resources.files("arrow_rl.perf").joinpath("data", "profile_rows", f"{name}.csv")
    if not path.is_file():
        return []
    text = path.read_text()
    rows = []
    for i, r in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            rows.append(dict(component=r["component"], x1=float(r["x1"]), x2=float(r["x2"]),
                             x3=float(r["x3"]), measured_ms=float(r["measured_ms"]), source=r["source"]))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"profile_rows/{name}.csv line {i}: bad row {r!r} ({exc})") from exc
    return rows


def model_component_ms(model: EngineLatencyModel, row: dict[str, Any]) -> float:
    """The model's prediction for one profile row (same component, same shape)."""
    c, x1, x2, x3 = row["component"], row["x1"], row["x2"], row["x3"]
    if c in ("token_ops", "xcheck_token_ops"):
        return float(model.token_ops_ms_table(np.asarray([x1]))[0])
    if c == "attn_decode":
        return model.attn_decode_layer_ms(x1, x2, kv_heads_gpu=int(x3))
    if c == "attn_prefill":
        return model.attn_prefill_layer_ms(x1, x2, q_heads_gpu=int(x3))
    if c == "all_reduce":
        return float(model.nccl_all_reduce_ms(np.asarray([x1]))[0])
    if c == "lm_head":
        return float(model.lm_head_s(np.asarray([x1]))[0] * 1e3)
    raise ValueError(f"unknown profile-row component {c!r}")


def row_predictions(name: str) -> list[tuple[str, float, float, float]]:
    """(component, x1, measured_ms, model_ms) for every shipped row of preset ``name``."""
    model = get_preset(name).latency
    return [(r["component"], r["x1"], r["measured_ms"], model_component_ms(model, r))
            for r in load_profile_rows(name)]


def plot_fit(name: str, out_path: str) -> None:
    """PNG: token-op table (measured vs model) and predicted-vs-measured over all shipped rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = row_predictions(name)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    tok = sorted((x, m, p) for c, x, m, p in rows if c == "token_ops")
    ax1.plot([t[0] for t in tok], [t[1] for t in tok], ".", ms=3, label="measured (profile rows)")
    ax1.plot([t[0] for t in tok], [t[2] for t in tok], "-", lw=1, label="model (compact table)")
    ax1.set_xlabel("tokens in batch")
    ax1.set_ylabel("token ops, all layers (ms)")
    ax1.set_title(f"{name}: token-level ops")
    ax1.legend()
    for comp in sorted({r[0] for r in rows}):
        pts = [(m, p) for c, _, m, p in rows if c == comp]
        ax2.loglog([q[0] for q in pts], [q[1] for q in pts], ".", ms=3, label=comp)
    lo = min(min(r[2], r[3]) for r in rows)
    hi = max(max(r[2], r[3]) for r in rows)
    ax2.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax2.set_xlabel("measured (ms)")
    ax2.set_ylabel("model (ms)")
    ax2.set_title("model vs measured, every shipped row")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)


def _abs_pct(model: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return np.abs(model - measured) / measured * 100.0


def anchor_model_value(preset: Preset, anchor: dict[str, Any]) -> float:
    """The model's value for one anchor (ms, or a ratio for ``prefill_growth``)."""
    m = preset.latency
    a = anchor["args"]
    kind = anchor["kind"]
    if kind == "prefill_iteration":
        n = int(a["tokens"])
        return m.iteration_time(n, n * n / 2.0, 0, 0) * 1e3
    if kind == "decode":
        b = int(a["batch"])
        return m.iteration_time(0, 0.0, b, b * int(a["context"])) * 1e3
    if kind == "kv_transfer":
        per_nic = preset.kv_transfer_bandwidth_Bps / preset.tp
        return (preset.kv_transfer_latency_s + float(a["bytes"]) / (per_nic * int(a["nics"]))) * 1e3
    if kind == "prefill_growth":
        t = lambda n: chunked_prefill_time(m, n)  # noqa: E731
        return (t(int(a["tokens"])) - t(int(a["floor"]))) / (t(int(a["base"])) - t(int(a["floor"])))
    raise ValueError(f"unknown anchor kind {kind!r}")


def evaluate_anchors(preset: Preset) -> list[dict[str, Any]]:
    out = []
    for anc in anchors_for(preset.name):
        val = anchor_model_value(preset, anc)
        lo, hi = anc.get("low_ms"), anc.get("high_ms")
        ref = anc.get("measured_ms", (lo + hi) / 2 if lo is not None else None)
        rec = dict(id=anc["id"], description=anc["description"], source=anc["source"], tag=anc["tag"],
                   target=anc["target"], reference=ref, low=lo, high=hi, model=val,
                   error_pct=(val - ref) / ref * 100.0,
                   in_range=(lo <= val <= hi) if lo is not None else None)
        out.append(rec)
    return out


def fit_report(name: str, tpot_slos_s: tuple[float, ...] = DEFAULT_TPOT_SLOS_S,
               e2e: dict[str, Any] | None = None) -> FitReport:
    """Compute the fit report of preset ``name`` from the shipped rows (no shared data needed).

    ``e2e`` is the end-to-end comparison with real runs, computed by the caller
    (``arrow_rl.fidelity.calibration.end_to_end_in_sample``): replaying runs needs the emulator,
    which ranks above this package.
    """
    preset = get_preset(name)
    model = preset.latency
    if not isinstance(model, EngineLatencyModel):
        raise TypeError(f"preset {name!r} has no calibrated model to report on")
    rows = load_profile_rows(name)
    by: dict[str, list[tuple[float, float]]] = {}
    src: dict[str, str] = {}
    for r in rows:
        by.setdefault(r["component"], []).append((model_component_ms(model, r), r["measured_ms"]))
        src.setdefault(r["component"], r["source"])
    comps = []
    all_err = []
    for comp, pairs in by.items():
        arr = np.asarray(pairs)
        err = _abs_pct(arr[:, 0], arr[:, 1])
        comps.append(ComponentError(comp, len(err), float(np.median(err)), float(np.percentile(err, 90)),
                                    src[comp]))
        if not comp.startswith("xcheck"):
            all_err.append(err)
    errs = np.concatenate(all_err) if all_err else np.array([np.nan])
    finite = errs[np.isfinite(errs)]
    prof = profile_instance(preset)
    facts = dict(gpu=preset.gpu, model=preset.model, tp=preset.tp,
                 kv_bytes_per_token=preset.kv_bytes_per_token,
                 kv_capacity_tokens=preset.kv_capacity_tokens, max_model_len=preset.max_model_len,
                 kv_transfer_bandwidth_GBps=preset.kv_transfer_bandwidth_Bps / 1e9,
                 kv_transfer_latency_ms=preset.kv_transfer_latency_s * 1e3)
    return FitReport(
        preset=name, components=comps, overall_rows=int(finite.size),
        overall_median_pct=float(np.median(finite)) if finite.size else float("nan"),
        overall_p90_pct=float(np.percentile(finite, 90)) if finite.size else float("nan"),
        anchors=evaluate_anchors(preset), profile=prof,
        max_tokens={s: prof.max_tokens(s) for s in tpot_slos_s}, facts=facts,
        e2e=e2e)
