"""The engine latency model: one vLLM iteration from the model's shape, the GPU and a few global constants.

Every preset is timed by the same formula; only the model's shape (layers, hidden size, heads, FFN
size, experts), the tensor parallelism and the GPU's datasheet peaks differ. The handful of free
constants (``arrow_rl/perf/data/engine.json``: bandwidth and FLOP efficiencies, per-iteration and
per-layer overheads, the API server's per-request latency) are fitted once, end to end, on real vLLM
serving runs (``scripts/fit_engine_model.py``), so the model carries to models and presets it was not
fitted on. This is the "roofline basis × fitted efficiencies" structure of BLIS' trained-physics
model; kernel-level tables (Vidur) remain in the repo only as a comparison (``arrow-rl perf-report``).

One iteration on one GPU (tensor parallel ranks run in lock step)::

    T = t_step + L·t_layer                                       engine + launch overheads (CUDA graphs)
      + L·Σ_gemm smax(W_g / (η_bw·BW), 2·n_g·W_g/2 / (η_f·F))     linear layers: weight streaming vs compute
      + L·N·e_tok / (η_bw·BW)                                    element-wise traffic (norms, activation)
      + L·2·AR(N·hidden·2 B)                                     tensor-parallel all-reduces (TP > 1)
      + Σctx · kv_bytes_per_token_gpu / (η_bw·BW)                decode attention: KV read
      + Σ_j c_j(k_j + c_j/2) · L·4·d_head·h_q / (η_attn·F)       prefill attention (FlashAttention FLOPs)
      + LM head over the sequences that sample
    N = prefill tokens + decode sequences in the batch; smax(a, b) = (a^p + b^p)^(1/p).

Mixture of experts (e.g. Mixtral): with N tokens routed top-k over E experts uniformly, the expected
number of experts touched is E·(1 − (1 − k/E)^N), each gets N·k/E_active tokens, and each active
expert streams its own weights; so a small batch reads a few experts and a large one reads all of
them and becomes compute bound on k/E of the expert FLOPs per token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

DENSE_TOKENS = 16384  # dense per-N tables cover N in [0, DENSE_TOKENS]; linear extrapolation beyond
BYTES = 2  # bf16


@dataclass(frozen=True)
class EngineConstants:
    """The global, fitted constants of the engine model (same for every preset)."""

    bw_efficiency: float        # η_bw: fraction of HBM peak streaming weights
    kv_bw_efficiency: float     # fraction of HBM peak the paged decode-attention kernel reads KV at
    flops_efficiency: float     # η_f: fraction of bf16 dense peak in large GEMMs
    attn_efficiency: float      # η_attn: fraction of peak in prefill attention (FlashAttention)
    moe_bw_efficiency: float    # grouped expert GEMMs (fused MoE kernel): weight streaming, relative to dense
    moe_flops_efficiency: float # the same kernel's compute rate relative to dense GEMMs
    smooth_p: float             # p of the smooth max between memory and compute time
    step_overhead_s: float      # per iteration: scheduler, input prep, sampling not hidden by async scheduling
    layer_overhead_s: float     # per layer per iteration: kernel launches and syncs inside the graphs
    seq_overhead_s: float       # per sequence per iteration: input prep, sampling, detokenization
    frontend_s: float           # per request: API server (HTTP, tokenization) before the engine sees it
    source: str = ""


@lru_cache(maxsize=None)
def engine_constants() -> EngineConstants:
    """The fitted constants shipped in ``arrow_rl/perf/data/engine.json``."""
    doc = json.loads(resources.files("arrow_rl.perf").joinpath("data", "engine.json").read_text())
    return _constants_from(doc)


def _constants_from(doc: dict[str, Any]) -> EngineConstants:
    c = doc["constants"]
    return EngineConstants(**{k: float(c[k]) for k in EngineConstants.__dataclass_fields__ if k != "source"},
                           source=doc.get("source", ""))


def engine_constants_from_file(path: str) -> EngineConstants:
    """Constants from an ``engine.json``-shaped file (a candidate refit), checked field by field."""
    from pathlib import Path

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read engine constants: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("constants"), dict):
        raise ValueError(f"{path}: missing field 'constants'")
    missing = [k for k in EngineConstants.__dataclass_fields__ if k != "source" and k not in doc["constants"]]
    if missing:
        raise ValueError(f"{path}: missing field 'constants.{missing[0]}'")
    return _constants_from(doc)


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    n_q_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    ffn: int = 0
    experts: int = 0            # 0: dense MLP
    experts_per_token: int = 0


def _smax(a: np.ndarray, b: np.ndarray, p: float) -> np.ndarray:
    return (a ** p + b ** p) ** (1.0 / p)


class EngineLatencyModel:
    """A ``LatencyModel`` for one preset (shape, GPU, TP) under the shared engine constants."""

    def __init__(self, doc: dict[str, Any], constants: EngineConstants | None = None) -> None:
        self.name: str = doc["name"]
        sh = doc["shape"]
        moe = doc.get("moe") or {}
        self.shape = ModelShape(sh["layers"], sh["hidden"], sh["n_q_heads"], sh["n_kv_heads"], sh["head_dim"],
                                sh["vocab"], sh.get("ffn", 0), int(moe.get("experts", 0)),
                                int(moe.get("experts_per_token", 0)))
        self.tp = int(doc["tp"])
        # Expert weights may be stored narrower than bf16 (gpt-oss: MXFP4); streaming them costs less.
        self._expert_bytes = float(sh.get("expert_weight_bytes", BYTES))
        self.c = constants if constants is not None else engine_constants()
        g = doc["gpu_specs"]
        self.bw = float(g["hbm_Bps"]) * self.c.bw_efficiency
        self.flops = float(g["bf16_flops"]) * self.c.flops_efficiency
        self.attn_flops = float(g["bf16_flops"]) * self.c.attn_efficiency
        self.kv_bw = float(g["hbm_Bps"]) * self.c.kv_bw_efficiency
        ar = doc.get("all_reduce")
        self._ar_knots = (list(ar["bytes"]), list(ar["ms"])) if ar and self.tp > 1 else None
        custom = (ar or {}).get("custom")
        self._custom_ar = ((float(custom["max_bytes"]), float(custom["latency_ms"]), float(custom["bw_Bps"]))
                           if custom and self.tp > 1 else None)
        s, tp, L = self.shape, self.tp, self.shape.layers
        self.kv_heads_gpu = max(s.n_kv_heads // tp, 1)  # KV heads replicate when TP > kv_heads
        self.q_heads_gpu = max(s.n_q_heads // tp, 1)
        self.kv_bytes_per_token_per_gpu = 2 * L * self.kv_heads_gpu * s.head_dim * BYTES
        # Per-layer weight elements on one GPU.
        self._attn_w = s.hidden * (s.n_q_heads + 2 * s.n_kv_heads) * s.head_dim / tp + s.n_q_heads * s.head_dim * s.hidden / tp
        self._mlp_w = 3.0 * s.hidden * s.ffn / tp            # gate, up, down (one expert when MoE)
        # Element-wise bytes per token per layer: two fused RMSNorm+residual (read x and residual,
        # write both) on the full hidden size, SiLU-and-mul (read 2·ffn, write ffn) on this rank's shard.
        k = s.experts_per_token if s.experts else 1
        self._elem_bytes_per_token = (8 * s.hidden + 3 * k * s.ffn / tp) * BYTES
        self._lm_w = s.vocab * s.hidden / tp
        self.decode_slope_s = self.kv_bytes_per_token_per_gpu / self.kv_bw
        self.prefill_pair_s = L * 4.0 * s.head_dim * self.q_heads_gpu / self.attn_flops

        n = np.arange(DENSE_TOKENS + 1, dtype=float)
        token = self.batch_tokens_s(n)
        self._dense_n: list[float] = token.tolist()
        self._tok_slope_tail = float(token[-1] - token[-1025]) / 1024.0
        dec = self.c.step_overhead_s + L * self.c.layer_overhead_s + self.c.seq_overhead_s * n + token + self.lm_head_s(n)
        self._dense_lm: list[float] = self.lm_head_s(n).tolist()
        self._dense_dec: list[float] = dec.tolist()
        self._dense_dec[0] = 0.0
        self.frontend_s = self.c.frontend_s

    # ---- components (vectorised) ----
    def gemm_s(self, weight_elems: float, tokens: np.ndarray, bw_scale: float = 1.0,
               flops_scale: float = 1.0, weight_bytes: float = BYTES) -> np.ndarray:
        """One GEMM of ``weight_elems`` weights over ``tokens`` rows: smooth max of streaming and compute."""
        mem = weight_elems * weight_bytes / (self.bw * bw_scale)
        comp = 2.0 * tokens * weight_elems / (self.flops * flops_scale)
        return _smax(np.full_like(tokens, mem, dtype=float), comp, self.c.smooth_p)

    def linear_layer_s(self, n: np.ndarray) -> np.ndarray:
        """One layer's linear layers (attention projections + MLP or experts) over ``n`` tokens."""
        n = np.asarray(n, dtype=float)
        t = self.gemm_s(self._attn_w, n)
        s = self.shape
        if s.experts:
            E, k = s.experts, s.experts_per_token
            active = E * (1.0 - (1.0 - k / E) ** n)                 # expected experts touched
            per = np.where(active > 0, n * k / np.maximum(active, 1e-9), 0.0)
            t = t + active * self.gemm_s(self._mlp_w, per, self.c.moe_bw_efficiency, self.c.moe_flops_efficiency,
                                          self._expert_bytes)
        else:
            t = t + self.gemm_s(self._mlp_w, n)
        return t

    def all_reduce_ms(self, nbytes: np.ndarray) -> np.ndarray:
        """One all-reduce as vLLM runs it: its custom NVLink kernel up to its size limit, else NCCL."""
        nbytes = np.asarray(nbytes, dtype=float)
        if self._ar_knots is None:
            return np.zeros_like(nbytes)
        nccl = np.interp(nbytes, *self._ar_knots)
        hi = nbytes > self._ar_knots[0][-1]
        if np.any(hi):  # past the table: its last secant
            (x0, x1), (y0, y1) = self._ar_knots[0][-2:], self._ar_knots[1][-2:]
            nccl = np.where(hi, y1 + (nbytes - x1) * (y1 - y0) / (x1 - x0), nccl)
        if self._custom_ar is None:
            return nccl
        max_b, lat_ms, bw = self._custom_ar
        return np.where(nbytes <= max_b, np.minimum(lat_ms + nbytes / bw * 1e3, nccl), nccl)

    def batch_tokens_s(self, n: np.ndarray) -> np.ndarray:
        """Seconds of everything that scales with the batch's tokens N, all layers (0 at N = 0)."""
        n = np.asarray(n, dtype=float)
        L = self.shape.layers
        t = L * (self.linear_layer_s(n) + n * self._elem_bytes_per_token / self.bw)
        if self._ar_knots is not None:
            t = t + L * 2 * self.all_reduce_ms(n * self.shape.hidden * BYTES) * 1e-3
        return np.where(n > 0, t, 0.0)

    def token_ops_ms_table(self, n: np.ndarray) -> np.ndarray:
        """Linear + element-wise ops over all layers (ms), comparable with Vidur's token-op rows."""
        n = np.asarray(n, dtype=float)
        return self.shape.layers * (self.linear_layer_s(n) + n * self._elem_bytes_per_token / self.bw) * 1e3

    def nccl_all_reduce_ms(self, nbytes: np.ndarray) -> np.ndarray:
        nbytes = np.asarray(nbytes, dtype=float)
        return np.interp(nbytes, *self._ar_knots) if self._ar_knots is not None else np.zeros_like(nbytes)

    def tp_all_reduce_s(self, n_tokens: float) -> float:
        if self._ar_knots is None or n_tokens <= 0:
            return 0.0
        return self.shape.layers * 2 * float(self.all_reduce_ms(np.array([n_tokens * self.shape.hidden * BYTES]))[0]) * 1e-3

    def lm_head_s(self, n_seqs: np.ndarray | float) -> np.ndarray:
        n_seqs = np.asarray(n_seqs, dtype=float)
        return np.where(n_seqs > 0, self.gemm_s(self._lm_w, np.atleast_1d(n_seqs)).reshape(n_seqs.shape), 0.0)

    def cpu_overhead_s(self, n_seqs: int) -> float:
        """Engine time per iteration that does not depend on the GPU work (fitted)."""
        return self.c.step_overhead_s + self.shape.layers * self.c.layer_overhead_s + self.c.seq_overhead_s * n_seqs

    def attn_decode_layer_ms(self, batch: float, kv: float, kv_heads_gpu: int | None = None) -> float:
        """One layer's decode attention on one GPU (ms): ``batch`` sequences of ``kv`` context."""
        h = self.kv_heads_gpu if kv_heads_gpu is None else kv_heads_gpu
        return batch * kv * 2 * h * self.shape.head_dim * BYTES / self.kv_bw * 1e3

    def attn_prefill_layer_ms(self, chunk: float, kv: float, q_heads_gpu: int | None = None) -> float:
        """One layer's prefill attention on one GPU (ms): ``chunk`` new tokens after ``kv`` cached."""
        q = self.q_heads_gpu if q_heads_gpu is None else q_heads_gpu
        return 4.0 * self.shape.head_dim * q * chunk * (kv + chunk / 2.0) / self.attn_flops * 1e3

    # ---- the LatencyModel protocol (hot path: plain arithmetic) ----
    def _tokens_s(self, n: int) -> float:
        if n <= DENSE_TOKENS:
            return self._dense_n[n]
        return self._dense_n[DENSE_TOKENS] + self._tok_slope_tail * (n - DENSE_TOKENS)

    def decode_time_coefficients(self, decode_seqs: int) -> tuple[float, float]:
        if decode_seqs <= 0:
            return 0.0, 0.0
        if decode_seqs <= DENSE_TOKENS:
            return self._dense_dec[decode_seqs], self.decode_slope_s
        n = decode_seqs
        return (self.cpu_overhead_s(n) + self._tokens_s(n) + float(self.lm_head_s(float(n))),
                self.decode_slope_s)

    def iteration_time(self, prefill_tokens: int, prefill_attention: float, decode_seqs: int,
                       decode_context: int) -> float:
        if prefill_tokens <= 0:
            intercept, slope = self.decode_time_coefficients(decode_seqs)
            return intercept + slope * decode_context
        n_seqs = decode_seqs + 1  # at least one prefill sequence produces logits
        lm = self._dense_lm[n_seqs] if n_seqs <= DENSE_TOKENS else float(self.lm_head_s(float(n_seqs)))
        return (self.cpu_overhead_s(n_seqs) + self._tokens_s(prefill_tokens + decode_seqs) + lm
                + self.prefill_pair_s * prefill_attention + self.decode_slope_s * decode_context)

    def __repr__(self) -> str:
        return f"EngineLatencyModel({self.name!r})"


def chunked_prefill_time(model: Any, prompt_tokens: int, chunk: int = 2048) -> float:
    """Seconds to prefill one lone prompt split into ``chunk``-token iterations (vLLM chunked prefill)."""
    done = 0
    total = 0.0
    while done < prompt_tokens:
        c = min(chunk, prompt_tokens - done)
        total += model.iteration_time(c, c * (done + c / 2.0), 0, 0)
        done += c
    return total


__all__ = ["EngineConstants", "EngineLatencyModel", "ModelShape", "chunked_prefill_time", "engine_constants",
           "engine_constants_from_file",
           "DENSE_TOKENS"]
