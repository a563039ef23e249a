"""Arrow §5.2 per-instance capability profiles (interface; fitted by ``profile_instance``).

Prefill time of a request is a quadratic in its input length, T(n) = a·n² + b·n + c; the decode
inter-token interval is a line over the batch's total tokens, interval(N) = slope·N + intercept.
"""

from __future__ import annotations

from dataclasses import dataclass


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
