"""Arrow §5.2 per-instance capability profiles (interface; fitted by ``profile_instance``).

Prefill time of a request is a quadratic in its input length, T(n) = a·n² + b·n + c; the decode
inter-token interval is a line over the batch's total tokens, interval(N) = slope·N + intercept.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from arrow_rl.perf.model import LatencyModel
    from arrow_rl.perf.preset import Preset


@dataclass(frozen=True)
class InstanceProfile:
    prefill_a: float
    prefill_b: float
    prefill_c: float
    decode_slope: float
    decode_intercept: float

    def prefill_time(self, tokens: float) -> float:
        """T(r, i) of Arrow §5.3 for a request with ``tokens`` input tokens."""
        return self.prefill_a * tokens * tokens + self.prefill_b * tokens + self.prefill_c

    def prefill_time_sum(self, count: int, tokens: float, tokens_sq: float) -> float:
        """Σ T over ``count`` requests given Σ tokens and Σ tokens² (see ``InstanceView``)."""
        return self.prefill_a * tokens_sq + self.prefill_b * tokens + self.prefill_c * count

    def decode_interval(self, batch_tokens: float) -> float:
        return self.decode_slope * batch_tokens + self.decode_intercept

    def max_tokens(self, slo_tpot_s: float) -> float:
        """MT(i, SLO_TPOT) = (SLO_TPOT − b)/a, 0 when the intercept alone misses the SLO (§5.3)."""
        if self.decode_intercept >= slo_tpot_s:
            return 0.0
        return (slo_tpot_s - self.decode_intercept) / self.decode_slope


# ---- Arrow §5.2 instance profiling -------------------------------------------------------------

# Arrow §5.2 profiles each instance type offline; the paper does not give the grid, so we choose:
PROFILE_PROMPT_LENGTHS: tuple[int, ...] = (
    16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384)
PROFILE_DECODE_BATCHES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128)
PROFILE_DECODE_CONTEXTS: tuple[int, ...] = (128, 256, 512, 1024, 2048, 4096)
PROFILE_CHUNK_TOKENS = 2048  # vLLM's default max_num_batched_tokens (chunked prefill)


def fit_instance_profile(latency: "LatencyModel", max_len: int | None = None,
                         chunk_tokens: int = PROFILE_CHUNK_TOKENS,
                         max_batch_tokens: int | None = None) -> InstanceProfile:
    """Fit Arrow §5.2's profile on ``latency``: a lone prefill T(n)=a·n²+b·n+c (least squares over
    ``PROFILE_PROMPT_LENGTHS``, each prompt split into ``chunk_tokens`` chunks like vLLM chunked
    prefill and the iterations summed), and the decode interval = slope·N + intercept over decode-only
    batches, N = total tokens (Σ context) in the batch; decode points whose N exceeds
    ``max_batch_tokens`` (the instance's KV capacity) cannot occur and are skipped."""
    import numpy as np

    from arrow_rl.perf.engine import chunked_prefill_time

    lens = [n for n in PROFILE_PROMPT_LENGTHS if max_len is None or n <= max_len]
    t = [chunked_prefill_time(latency, n, chunk_tokens) for n in lens]
    x = np.asarray(lens, dtype=float)
    # Relative least squares: short prompts matter as much as long ones for TTFT prediction.
    w = 1.0 / np.asarray(t)
    A = np.column_stack([x * x, x, np.ones_like(x)]) * w[:, None]
    a, b, c = np.linalg.lstsq(A, np.asarray(t) * w, rcond=None)[0]
    ns, ts = [], []
    for bs in PROFILE_DECODE_BATCHES:
        for ctx in PROFILE_DECODE_CONTEXTS:
            total = bs * ctx
            if (max_len is not None and ctx > max_len) or (max_batch_tokens is not None and total > max_batch_tokens):
                continue
            ns.append(total)
            ts.append(latency.iteration_time(0, 0.0, bs, total))
    # Relative least squares again, so small batches (where the intercept dominates) fit as well.
    tsa = np.asarray(ts)
    wd = 1.0 / tsa
    D = np.column_stack([np.asarray(ns, dtype=float), np.ones(len(ns))]) * wd[:, None]
    slope, intercept = np.linalg.lstsq(D, tsa * wd, rcond=None)[0]
    return InstanceProfile(prefill_a=float(a), prefill_b=float(b), prefill_c=float(c),
                           decode_slope=float(slope), decode_intercept=float(intercept))


@lru_cache(maxsize=None)
def _profile_cached(name: str, latency: "LatencyModel", max_len: int, kv_capacity: int) -> InstanceProfile:
    return fit_instance_profile(latency, max_len, max_batch_tokens=kv_capacity)


def profile_instance(preset: "Preset") -> InstanceProfile:
    """Arrow §5.2 offline profile of one instance type, cached per preset (name and latency model)."""
    return _profile_cached(preset.name, preset.latency, preset.max_model_len, preset.kv_capacity_tokens)
