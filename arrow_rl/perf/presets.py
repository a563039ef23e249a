"""Named cluster presets: one (GPU, model, TP) instance type each, with its calibrated latency model.

The fitted numbers live in ``arrow_rl/perf/data/<name>.json`` (regenerated from the raw public
profiles by ``scripts/fit_latency_model.py``; sources and licences in ``data/README.md``).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from arrow_rl.perf.engine import EngineLatencyModel
from arrow_rl.perf.preset import Preset

PRESET_NAMES: tuple[str, ...] = (
    "h100-llama2-7b-tp1",
    "h100-llama2-70b-tp4",
    "h100-llama3.1-8b-tp1",
    "h100-llama3.1-70b-tp4",
    "h100-codellama-34b-tp2",
    "h100-mixtral-8x7b-tp2",
    "a100-llama3-8b-tp1",
    "a100-llama3-70b-tp4",
)
BLOCK_SIZE = 16  # vLLM's default KV block size (tokens)


def list_presets() -> list[str]:
    """Names accepted by :func:`get_preset`."""
    return list(PRESET_NAMES)


def _check_name(name: str) -> None:
    if name not in PRESET_NAMES:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESET_NAMES)}")


@lru_cache(maxsize=None)
def load_preset_document(name: str) -> dict[str, Any]:
    """The fitted JSON document of preset ``name`` (cached; treat as read-only)."""
    _check_name(name)
    text = resources.files("arrow_rl.perf").joinpath("data", f"{name}.json").read_text()
    return json.loads(text)


@lru_cache(maxsize=None)
def latency_model(name: str) -> EngineLatencyModel:
    """The (shared, immutable) engine latency model of preset ``name``."""
    return EngineLatencyModel(load_preset_document(name))


def vllm_serve_defaults(name: str) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) that ``vllm serve`` picks on preset ``name``'s GPU.

    vLLM v1 ``EngineArgs.get_batch_defaults`` (vllm/engine/arg_utils.py): on GPUs with >= 70 GiB
    that are not A100s (H100, H200, MI300X) the API server uses 8192 tokens and 1024 sequences; on
    other GPUs (A100 included, vLLM PR #17885) 2048 tokens and 256 sequences.
    """
    doc = load_preset_document(name)
    big = doc["gpu_memory_bytes"] >= 70 * 2**30 and "a100" not in doc["gpu"].lower()
    return (8192, 1024) if big else (2048, 256)


def kv_capacity_tokens(doc: dict[str, Any], gpu_memory_utilization: float) -> int:
    """(GPU mem × TP × utilization − weights − activation reserve) / KV bytes per token, in whole blocks."""
    tp = int(doc["tp"])
    free = (doc["gpu_memory_bytes"] * tp * gpu_memory_utilization - doc["weight_bytes"]
            - doc["activation_reserve_bytes_per_gpu"] * tp)
    blocks = int(free // (doc["kv_bytes_per_token"] * BLOCK_SIZE))
    return max(blocks, 0) * BLOCK_SIZE


def get_preset(name: str, gpu_memory_utilization: float = 0.9) -> Preset:
    """Build preset ``name``; KV capacity follows ``gpu_memory_utilization`` (vLLM's default 0.9)."""
    _check_name(name)
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization!r}")
    doc = load_preset_document(name)
    cap = kv_capacity_tokens(doc, gpu_memory_utilization)
    if cap <= 0:
        raise ValueError(
            f"preset {name!r}: gpu_memory_utilization={gpu_memory_utilization} leaves no memory for the "
            f"KV cache after {doc['weight_bytes'] / 1e9:.1f} GB of weights")
    return Preset(
        name=name,
        gpu=doc["gpu"],
        model=doc["model"],
        tp=int(doc["tp"]),
        kv_bytes_per_token=int(doc["kv_bytes_per_token"]),
        kv_capacity_tokens=cap,
        block_size=BLOCK_SIZE,
        kv_transfer_bandwidth_Bps=float(doc["kv_transfer_bandwidth_Bps"]),
        kv_transfer_latency_s=float(doc["kv_transfer_latency_s"]),
        max_model_len=min(int(doc["max_model_len"]), cap),
        latency=latency_model(name),
        gpu_memory_utilization=gpu_memory_utilization,
    )
