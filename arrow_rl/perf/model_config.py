"""A preset from a model's shape: model config + GPU + TP + engine knobs, and vLLM's KV accounting.

A user describes an instance type the way a Hugging Face ``config.json`` and a ``vllm serve``
command line do (layers, hidden size, heads, KV heads, intermediate size, experts; GPU, TP,
``gpu_memory_utilization``, ``max_num_batched_tokens``, ``max_num_seqs``) and gets a preset timed by
the shared engine model (``engine.py``), with no per-preset fitting.

KV capacity follows vLLM's own accounting (v1 ``Worker.determine_available_memory`` and
``kv_cache_utils``), per GPU::

    available  = total_memory × gpu_memory_utilization − weights − activation_peak − non_torch
    num_blocks = available // (2 · block_size · kv_heads_per_gpu · head_dim · kv_dtype_bytes) // layers

vLLM measures ``activation_peak`` (a profile forward pass of ``max_num_batched_tokens`` tokens and a
sampler pass of ``max_num_seqs`` sequences) and ``non_torch`` (NCCL, cuBLAS workspaces) at start-up;
here they are estimated from the shape (:func:`activation_peak_bytes`) unless the preset states them,
and a preset may state the ``num_gpu_blocks`` a real server reported (vLLM's
``num_gpu_blocks_override``), which then wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

GiB = 2**30
BF16_BYTES = 2

# The sampler's start-up pass holds this many fp32 copies of a (max_num_seqs × vocab) logits tensor
# at its peak (logits, probabilities, log-probabilities, sort buffers). Chosen so the accounting
# reproduces the RTX 4090 Llama-3.1-8B replay's reported 2,588 blocks (docs/fidelity.md).
SAMPLER_LOGIT_COPIES = 7
# Memory outside PyTorch's allocator that vLLM also subtracts: CUDA context, cuBLAS workspaces; with
# TP > 1 the NCCL buffers too. vLLM's own start-up logs on H100 report 0.13 GiB at TP1 and 0.55 GiB
# at TP2 (llm-d-benchmark, config_explorer/empirical-vllm-memory-results.md).
NON_TORCH_BYTES_TP1 = int(0.13 * GiB)
NON_TORCH_BYTES_TP = int(0.55 * GiB)


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model's datasheet facts (memory as the driver reports it to PyTorch)."""

    name: str
    memory_bytes: int
    hbm_Bps: float
    bf16_flops: float           # dense, fp32 accumulate
    kv_nic_Bps: float           # effective KV-transfer bandwidth per GPU (RDMA NIC or PCIe)
    all_reduce_like: str | None = None  # an H100 preset whose measured all-reduce tables apply
    source: str = ""


GPUS: dict[str, GpuSpec] = {g.name: g for g in (
    GpuSpec("H100-80GB-SXM", 81559 * 2**20, 3.35e12, 989.4e12, 17.5e9, "h100",
            "NVIDIA H100 SXM datasheet; memory as nvidia-smi reports it (the named presets' figure)"),
    GpuSpec("H200-141GB-SXM", 143771 * 2**20, 4.8e12, 989.4e12, 17.5e9, "h100",
            "NVIDIA H200 datasheet (same NVLink generation as H100)"),
    GpuSpec("RTX4090", 25250627584, 1.008e12, 165.2e12, 12.0e9, None,
            "NVIDIA Ada whitepaper (bf16 dense, fp32 accumulate); memory as vLLM 0.19 reported it"),
    GpuSpec("L40S", 46068 * 2**20, 0.864e12, 362.05e12, 12.5e9, None,
            "NVIDIA L40S datasheet (bf16 dense, fp32 accumulate; PCIe, no NVLink)"),
    GpuSpec("RTXPRO6000", 102_000_000_000, 1.792e12, 503.8e12, 25.0e9, None,
            "NVIDIA RTX PRO 6000 Blackwell datasheet (approximate; PCIe, no NVLink)"),
)}

# H100-class all-reduce tables (measured, Vidur), borrowed per TP from the calibrated presets.
_ALL_REDUCE_FROM = {2: "h100-codellama-34b-tp2", 4: "h100-llama3.1-70b-tp4"}
# GPUs without NVLink all-reduce over PCIe: ring all-reduce moves 2·(TP−1)/TP of the bytes.
_PCIE_AR_LATENCY_MS = 0.02
_PCIE_AR_Bps = 20e9


def serve_defaults(gpu: GpuSpec) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) ``vllm serve`` picks on ``gpu`` (``presets.vllm_serve_defaults``:
    8192 / 1024 on GPUs of 70 GiB or more other than A100, else 2048 / 256)."""
    big = gpu.memory_bytes >= 70 * 2**30 and "a100" not in gpu.name.lower()
    return (8192, 1024) if big else (2048, 256)


class PresetSpecError(ValueError):
    """A preset description that cannot be built; the message names the file and the field."""


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a transformer as its ``config.json`` states it."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    head_dim: int = 0                 # 0: hidden // heads
    experts: int = 0                  # 0: dense MLP
    experts_per_token: int = 0
    tie_embeddings: bool = False
    max_model_len: int = 32768
    expert_weight_bits: float = 16.0  # e.g. 4.25 for MXFP4 experts (gpt-oss)
    source: str = ""

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def layer_params(self) -> tuple[float, float]:
        """(bf16 parameters, expert parameters) of one decoder layer."""
        d = self.head_size
        attn = self.hidden * (self.heads + 2 * self.kv_heads) * d + self.heads * d * self.hidden
        norms = 2 * self.hidden
        if self.experts:
            return attn + norms + self.hidden * self.experts, 3.0 * self.hidden * self.intermediate * self.experts
        return attn + norms + 3.0 * self.hidden * self.intermediate, 0.0

    def weight_bytes(self) -> int:
        """Bytes of the checkpoint as loaded (bf16, experts at ``expert_weight_bits``)."""
        dense, expert = self.layer_params()
        embed = self.vocab * self.hidden * (1 if self.tie_embeddings else 2)
        return int((self.layers * dense + embed + self.hidden) * BF16_BYTES
                   + self.layers * expert * self.expert_weight_bits / 8)


@dataclass(frozen=True)
class EngineKnobs:
    """The ``vllm serve`` settings that shape capacity and scheduling."""

    gpu_memory_utilization: float = 0.9
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 1024
    block_size: int = 16
    num_gpu_blocks: int | None = None          # stated by the server: wins over the accounting
    activation_peak_bytes: int | None = None   # per GPU, as vLLM's start-up log states it


@dataclass(frozen=True)
class KvAccounting:
    """vLLM's KV budget on one GPU, term by term (bytes), and the resulting blocks."""

    total: int
    requested: float
    weights: int
    activation_peak: int
    non_torch: int
    page_bytes_per_layer: int
    computed_blocks: int
    num_gpu_blocks: int           # the stated figure when there is one, else ``computed_blocks``
    stated: bool = False
    notes: list[str] = field(default_factory=list)


def activation_peak_bytes(model: ModelConfig, tp: int, knobs: EngineKnobs) -> int:
    """Estimated peak of vLLM's start-up profile run on one GPU: the forward pass over
    ``max_num_batched_tokens`` tokens (gate/up output of this rank's MLP shard, residual and norm
    buffers) and the sampler over ``min(max_num_seqs, max_num_batched_tokens)`` sequences."""
    k = model.experts_per_token if model.experts else 1
    per_token = (2 * k * model.intermediate / tp + 4 * model.hidden) * BF16_BYTES
    seqs = min(knobs.max_num_seqs, knobs.max_num_batched_tokens)
    return int(knobs.max_num_batched_tokens * per_token + seqs * model.vocab * 4 * SAMPLER_LOGIT_COPIES)


def kv_accounting(model: ModelConfig, gpu: GpuSpec, tp: int, knobs: EngineKnobs) -> KvAccounting:
    """vLLM's KV-cache budget for ``model`` on ``tp`` GPUs of kind ``gpu`` (per GPU; TP ranks agree)."""
    kv_heads_gpu = max(model.kv_heads // tp, 1)   # KV heads replicate when TP > kv_heads
    page = 2 * knobs.block_size * kv_heads_gpu * model.head_size * BF16_BYTES
    weights = int(math.ceil(model.weight_bytes() / tp))
    act = knobs.activation_peak_bytes if knobs.activation_peak_bytes is not None \
        else activation_peak_bytes(model, tp, knobs)
    non_torch = NON_TORCH_BYTES_TP1 if tp == 1 else NON_TORCH_BYTES_TP
    requested = gpu.memory_bytes * knobs.gpu_memory_utilization
    available = requested - weights - act - non_torch
    computed = max(int(available // page // model.layers), 0)
    stated = knobs.num_gpu_blocks is not None
    return KvAccounting(total=gpu.memory_bytes, requested=requested, weights=weights, activation_peak=act,
                        non_torch=non_torch, page_bytes_per_layer=page, computed_blocks=computed,
                        num_gpu_blocks=int(knobs.num_gpu_blocks) if stated else computed, stated=stated)


def all_reduce_table(gpu: GpuSpec, tp: int, calibrated_doc: Any) -> dict[str, Any] | None:
    """The all-reduce table a TP group of ``gpu`` uses: an H100-class measured table (NVLink), or a
    PCIe ring estimate. ``calibrated_doc(name)`` loads a calibrated preset's document."""
    if tp == 1:
        return None
    if gpu.all_reduce_like and tp in _ALL_REDUCE_FROM:
        return calibrated_doc(_ALL_REDUCE_FROM[tp])["all_reduce"]
    knots = [2.0**k for k in range(11, 27)]
    frac = 2.0 * (tp - 1) / tp
    return {"bytes": knots, "ms": [_PCIE_AR_LATENCY_MS + b * frac / _PCIE_AR_Bps * 1e3 for b in knots],
            "source": f"PCIe ring estimate: {_PCIE_AR_LATENCY_MS * 1e3:g} us + 2(TP-1)/TP bytes at "
                      f"{_PCIE_AR_Bps / 1e9:g} GB/s"}


def preset_document(name: str, model: ModelConfig, gpu: GpuSpec, tp: int, knobs: EngineKnobs,
                    calibrated_doc: Any) -> dict[str, Any]:
    """The document ``EngineLatencyModel`` and ``get_preset`` read, built from the shape."""
    kv_heads_gpu = max(model.kv_heads // tp, 1)
    acc = kv_accounting(model, gpu, tp, knobs)
    return {
        "name": name, "gpu": gpu.name, "model": model.name, "tp": tp,
        "shape": {"layers": model.layers, "hidden": model.hidden, "n_q_heads": model.heads,
                  "n_kv_heads": model.kv_heads, "head_dim": model.head_size, "ffn": model.intermediate,
                  "vocab": model.vocab, "expert_weight_bytes": model.expert_weight_bits / 8},
        "moe": ({"experts": model.experts, "experts_per_token": model.experts_per_token}
                if model.experts else None),
        "kv_bytes_per_token": 2 * model.layers * kv_heads_gpu * model.head_size * BF16_BYTES * tp,
        "weight_bytes": model.weight_bytes(),
        "max_model_len": model.max_model_len,
        "gpu_memory_bytes": gpu.memory_bytes,
        "kv_transfer_bandwidth_Bps": gpu.kv_nic_Bps * tp,
        "kv_transfer_latency_s": 0.5e-3,
        "gpu_specs": {"hbm_Bps": gpu.hbm_Bps, "bf16_flops": gpu.bf16_flops, "source": gpu.source},
        "all_reduce": all_reduce_table(gpu, tp, calibrated_doc),
        "engine_knobs": {"gpu_memory_utilization": knobs.gpu_memory_utilization,
                         "max_num_batched_tokens": knobs.max_num_batched_tokens,
                         "max_num_seqs": knobs.max_num_seqs, "block_size": knobs.block_size},
        "kv_accounting": acc,
        "source": model.source,
    }


__all__ = ["EngineKnobs", "GPUS", "GpuSpec", "KvAccounting", "ModelConfig", "PresetSpecError",
           "activation_peak_bytes", "all_reduce_table", "kv_accounting", "preset_document"]
