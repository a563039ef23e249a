"""A cluster preset: one (GPU, model, TP) instance type with its latency model and KV facts."""

from __future__ import annotations

from dataclasses import dataclass

from arrow_rl.perf.model import LatencyModel


@dataclass(frozen=True)
class Preset:
    """Everything the emulator needs to know about one instance type.

    ``kv_capacity_tokens`` = (GPU memory × TP × gpu_memory_utilization − weights − activation
    reserve) / kv_bytes_per_token, rounded down to whole blocks.
    """

    name: str
    gpu: str
    model: str
    tp: int
    kv_bytes_per_token: int          # for the whole instance (all TP ranks together)
    kv_capacity_tokens: int
    block_size: int                  # KV block size in tokens (vLLM default 16)
    kv_transfer_bandwidth_Bps: float # effective instance-to-instance KV bandwidth, bytes/s
    kv_transfer_latency_s: float     # fixed per-transfer latency
    max_model_len: int
    latency: LatencyModel
    gpu_memory_utilization: float = 0.9

    def kv_transfer_time(self, tokens: int) -> float:
        """Seconds to move the KV of ``tokens`` prompt tokens between two instances."""
        return self.kv_transfer_latency_s + tokens * self.kv_bytes_per_token / self.kv_transfer_bandwidth_Bps

    def sped_up(self, speedup: float) -> "Preset":
        """The same instance type ``speedup`` times faster: every engine iteration, the API server's
        per-request time and the KV transfers take ``1 / speedup`` of the time. A controller run
        on it is better than itself by construction, which is how the suite's power check
        (``arrow-rl suite power``) shows what size of difference the protocol can resolve."""
        if not speedup > 0:
            raise ValueError(f"speedup must be > 0, got {speedup}")
        if speedup == 1.0:
            return self
        from dataclasses import replace

        return replace(self, latency=ScaledLatency(self.latency, 1.0 / speedup),
                       kv_transfer_bandwidth_Bps=self.kv_transfer_bandwidth_Bps * speedup,
                       kv_transfer_latency_s=self.kv_transfer_latency_s / speedup)


class ScaledLatency:
    """A latency model whose every duration is ``scale`` times another's (``Preset.sped_up``)."""

    def __init__(self, inner: LatencyModel, scale: float) -> None:
        self.inner, self.scale = inner, float(scale)
        self.frontend_s = float(getattr(inner, "frontend_s", 0.0)) * self.scale

    def iteration_time(self, prefill_tokens: int, prefill_attention: float, decode_seqs: int,
                       decode_context: int) -> float:
        return self.scale * self.inner.iteration_time(prefill_tokens, prefill_attention, decode_seqs, decode_context)

    def decode_time_coefficients(self, decode_seqs: int) -> tuple[float, float]:
        a, b = self.inner.decode_time_coefficients(decode_seqs)
        return self.scale * a, self.scale * b
