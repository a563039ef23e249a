"""The calibrated latency model: measured token-op tables + analytic attention, comms and overheads.

Structure (``/work/shared/data/CALIBRATION.md``, "Recommended latency model"; the same split as
Vidur's predictor)::

    T_iter = T_cpu(n_seqs) + T_tok(N) + L·2·(T_allreduce(N·hidden·2 B) + launch)
             + [decode] L·a_d + Σctx · kv_bytes_per_gpu / BW_dec
             + [prefill] L·a_p + Σ pairs · L·4·d_head·n_q_gpu / F_pre
             + T_lmhead(n_seqs)
    N = prefill tokens + decode sequences

``T_tok`` (all layers) is a monotone piecewise-linear table built from Vidur's measured per-layer
token-op profiles; the all-reduce is a table from Vidur's NCCL measurements; the attention constants
are fitted on measured attention kernels (see ``scripts/fit_latency_model.py``). Everything that
depends on ``N`` alone is expanded once into a dense Python list indexed by ``N`` so that each call
is a handful of float operations (the emulator calls it hundreds of thousands of times).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DENSE_TOKENS = 16384  # dense tables cover N in [0, DENSE_TOKENS]; linear extrapolation beyond


def _interp_extrap(x: np.ndarray, xp: list[float], fp: list[float]) -> np.ndarray:
    """np.interp with linear extrapolation past the last knot.

    The slope is the secant over the upper half of the table, not the last segment: the tables are
    monotone envelopes of measurements, so they end in plateaus (the H100 8B token-op table's last
    two knots are equal), and a last-segment slope of 0 would make every token past 4096 free (an
    8192-token prefill came out 0.59x of an eager forward pass measured on an H100;
    docs/latency_model.md, "Checked on a GPU").
    """
    xp_a = np.asarray(xp, dtype=float)
    fp_a = np.asarray(fp, dtype=float)
    y = np.interp(x, xp_a, fp_a)
    if len(xp_a) >= 2:
        k = min(int(np.searchsorted(xp_a, xp_a[-1] / 2.0)), len(xp_a) - 2)
        slope = (fp_a[-1] - fp_a[k]) / (xp_a[-1] - xp_a[k])
        hi = x > xp_a[-1]
        y[hi] = fp_a[-1] + slope * (x[hi] - xp_a[-1])
    return y


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    n_q_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int


class CalibratedLatencyModel:
    """A ``LatencyModel`` built from one preset's fitted JSON document (``arrow_rl/perf/data``)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.name: str = doc["name"]
        sh = doc["shape"]
        self.shape = ModelShape(sh["layers"], sh["hidden"], sh["n_q_heads"], sh["n_kv_heads"],
                                sh["head_dim"], sh["vocab"])
        self.tp = int(doc["tp"])
        L = self.shape.layers
        att = doc["attention"]
        lm = doc["lm_head"]
        cpu = doc["cpu"]
        self._tok_knots = (list(doc["token_ops"]["tokens"]), list(doc["token_ops"]["ms"]))
        ar = doc.get("all_reduce")
        self._ar_knots = (list(ar["bytes"]), list(ar["ms"])) if ar else None
        custom = (ar or {}).get("custom")
        self._custom_ar = ((float(custom["max_bytes"]), float(custom["latency_ms"]), float(custom["bw_Bps"]))
                           if custom else None)
        self._nccl_launch_ms = float(doc.get("nccl_launch_ms", 0.0))
        kv_heads_gpu = max(self.shape.n_kv_heads // self.tp, 1)  # KV heads replicate when TP > kv_heads
        q_heads_gpu = self.shape.n_q_heads // self.tp
        self.kv_bytes_per_token_per_gpu = 2 * L * kv_heads_gpu * self.shape.head_dim * 2
        # Seconds per context token of a decode batch (memory-bound KV read, all layers).
        self.decode_bw_Bps = float(att["decode_bw_Bps"])
        self.prefill_flops = float(att["prefill_flops"])
        self.decode_slope_s = self.kv_bytes_per_token_per_gpu / self.decode_bw_Bps
        self.decode_base_s = L * float(att["decode_base_ms"]) * 1e-3
        # Per-sequence / per-token attention work (Q/O traffic, softmax setup), per KV / Q head.
        self._dec_seq_head_ms = float(att.get("decode_seq_head_ms", 0.0))
        self._pre_tok_head_ms = float(att.get("prefill_token_head_ms", 0.0))
        self.decode_seq_s = L * self._dec_seq_head_ms * kv_heads_gpu * 1e-3
        self.prefill_token_s = L * self._pre_tok_head_ms * q_heads_gpu * 1e-3
        # Seconds per query-key pair of prefill attention (compute-bound, all layers).
        self.prefill_pair_s = L * 4.0 * self.shape.head_dim * q_heads_gpu / float(att["prefill_flops"])
        self.prefill_base_s = L * float(att["prefill_base_ms"]) * 1e-3
        self.cpu_base_s = float(cpu["base_ms"]) * 1e-3
        self.cpu_per_seq_s = float(cpu["per_seq_ms"]) * 1e-3
        lm_w = self.shape.vocab * self.shape.hidden * 2 / self.tp
        self._lm_floor_s = lm_w / float(lm["bw_Bps"])
        self._lm_per_seq_s = 2.0 * self.shape.hidden * self.shape.vocab / self.tp / float(lm["flops"])

        n = np.arange(DENSE_TOKENS + 1, dtype=float)
        token = self.batch_tokens_s(n)
        # Dense per-N time of everything that depends on N only (token ops + TP all-reduces), and
        # its slope over the last 1024 tokens for linear extrapolation beyond the dense range.
        self._dense_n: list[float] = token.tolist()
        self._tok_slope_tail = float(token[-1] - token[-1025]) / 1024.0
        # Dense decode-only intercept per decode batch size (also used for exact agreement).
        seqs = n
        dec = (self.cpu_base_s + (self.cpu_per_seq_s + self.decode_seq_s) * seqs + token
               + self.lm_head_s(seqs) + self.decode_base_s)
        self._dense_dec: list[float] = dec.tolist()
        self._dense_dec[0] = 0.0

    # ---- components (vectorised; used to build the dense tables and by the fit report) ----
    def token_ops_ms_table(self, n: np.ndarray) -> np.ndarray:
        """Token-level ops, all layers (ms), from the compact measured table."""
        k, v = self._tok_knots
        return _interp_extrap(np.asarray(n, dtype=float), k, v)

    def nccl_all_reduce_ms(self, nbytes: np.ndarray) -> np.ndarray:
        """One NCCL all-reduce of ``nbytes`` (ms) from the measured table; 0 at TP1."""
        nbytes = np.asarray(nbytes, dtype=float)
        if self._ar_knots is None:
            return np.zeros_like(nbytes)
        return _interp_extrap(nbytes, *self._ar_knots)

    def all_reduce_ms(self, nbytes: np.ndarray) -> np.ndarray:
        """One all-reduce as vLLM runs it: its custom NVLink kernel up to its size limit, else NCCL."""
        nbytes = np.asarray(nbytes, dtype=float)
        nccl = self.nccl_all_reduce_ms(nbytes)
        if self._custom_ar is None:
            return nccl
        max_b, lat_ms, bw = self._custom_ar
        custom = lat_ms + nbytes / bw * 1e3
        return np.where(nbytes <= max_b, np.minimum(custom, nccl), nccl)

    def batch_tokens_s(self, n: np.ndarray) -> np.ndarray:
        """Seconds of everything that scales with the batch's tokens: token ops + 2 all-reduces/layer."""
        n = np.asarray(n, dtype=float)
        ms = self.token_ops_ms_table(n)
        if self._ar_knots is not None:
            ms = ms + self.shape.layers * 2 * (self.all_reduce_ms(n * self.shape.hidden * 2) + self._nccl_launch_ms)
        out = ms * 1e-3
        return np.where(n > 0, out, 0.0)

    def tp_all_reduce_s(self, n_tokens: float) -> float:
        """Seconds of one iteration's tensor-parallel all-reduces (2 per layer) over ``n_tokens``; 0 at
        TP1. Lets a one-GPU measurement of a TP rank be compared with the rest of the model."""
        if self._ar_knots is None or n_tokens <= 0:
            return 0.0
        per = float(self.all_reduce_ms(np.array([n_tokens * self.shape.hidden * 2.0]))[0]) + self._nccl_launch_ms
        return self.shape.layers * 2 * per * 1e-3

    def cpu_overhead_s(self, n_seqs: int) -> float:
        """vLLM's per-iteration CPU scheduling time (a chosen constant, not a measurement)."""
        return self.cpu_base_s + self.cpu_per_seq_s * n_seqs

    def lm_head_s(self, n_seqs: np.ndarray | float) -> np.ndarray:
        """LM head over the last token of each sequence: max(weight read, GEMM) (seconds)."""
        n_seqs = np.asarray(n_seqs, dtype=float)
        return np.where(n_seqs > 0, np.maximum(self._lm_floor_s, self._lm_per_seq_s * n_seqs), 0.0)

    def attn_decode_layer_ms(self, batch: float, kv: float, kv_heads_gpu: int | None = None) -> float:
        """One layer's decode attention on one GPU (ms) for ``batch`` sequences of ``kv`` context."""
        if kv_heads_gpu is None:
            kv_heads_gpu = max(self.shape.n_kv_heads // self.tp, 1)
        per_layer_bytes = 2 * kv_heads_gpu * self.shape.head_dim * 2
        return (self.decode_base_s / self.shape.layers * 1e3 + self._dec_seq_head_ms * batch * kv_heads_gpu
                + batch * kv * per_layer_bytes / self.decode_bw_Bps * 1e3)

    def attn_prefill_layer_ms(self, chunk: float, kv: float, q_heads_gpu: int | None = None) -> float:
        """One layer's prefill attention on one GPU (ms), ``chunk`` new tokens after ``kv`` cached."""
        q = q_heads_gpu if q_heads_gpu is not None else self.shape.n_q_heads // self.tp
        flops = 4.0 * self.shape.head_dim * q * chunk * (kv + chunk / 2.0)
        return (self.prefill_base_s / self.shape.layers * 1e3 + self._pre_tok_head_ms * chunk * q
                + flops / self.prefill_flops * 1e3)

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
        lm = max(self._lm_floor_s, self._lm_per_seq_s * n)
        return (self.cpu_base_s + (self.cpu_per_seq_s + self.decode_seq_s) * n + self._tokens_s(n) + lm
                + self.decode_base_s,
                self.decode_slope_s)

    def iteration_time(self, prefill_tokens: int, prefill_attention: float, decode_seqs: int,
                       decode_context: int) -> float:
        if prefill_tokens <= 0:
            intercept, slope = self.decode_time_coefficients(decode_seqs)
            return intercept + slope * decode_context
        n_seqs = decode_seqs + 1  # at least one prefill sequence produces logits
        t = (self.cpu_base_s + self.cpu_per_seq_s * n_seqs + self._tokens_s(prefill_tokens + decode_seqs)
             + max(self._lm_floor_s, self._lm_per_seq_s * n_seqs)
             + self.prefill_base_s + self.prefill_token_s * prefill_tokens
             + self.prefill_pair_s * prefill_attention)
        if decode_seqs > 0:
            t += self.decode_base_s + self.decode_seq_s * decode_seqs + self.decode_slope_s * decode_context
        return t

    def __repr__(self) -> str:
        return f"CalibratedLatencyModel({self.name!r})"


def chunked_prefill_time(model: Any, prompt_tokens: int, chunk: int = 2048) -> float:
    """Seconds to prefill one lone prompt split into ``chunk``-token iterations (vLLM chunked prefill)."""
    done = 0
    total = 0.0
    while done < prompt_tokens:
        c = min(chunk, prompt_tokens - done)
        total += model.iteration_time(c, c * (done + c / 2.0), 0, 0)
        done += c
    return total


__all__ = ["CalibratedLatencyModel", "ModelShape", "chunked_prefill_time", "DENSE_TOKENS"]
