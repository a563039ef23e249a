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
