"""Named cluster presets: one (GPU, model, TP) instance type each, timed by the shared engine model.

Two kinds, used alike: the calibrated presets, whose documents live in ``arrow_rl/perf/data/<name>.json``
(regenerated from the raw public profiles by ``scripts/fit_latency_model.py``; sources and licences
in ``data/README.md``), and presets built from a model's shape (``data/shape_presets/<name>.yaml``,
or a YAML file a user writes: :func:`register_preset_file`; see ``model_config.py``).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from arrow_rl.perf.engine import EngineLatencyModel
from arrow_rl.perf.preset import Preset

CALIBRATED_PRESET_NAMES: tuple[str, ...] = (
    "h100-llama2-7b-tp1",
    "h100-llama2-70b-tp4",
    "h100-llama3.1-8b-tp1",
    "h100-llama3.1-70b-tp4",
    "h100-codellama-34b-tp2",
    "h100-mixtral-8x7b-tp2",
    "a100-llama3-8b-tp1",
    "a100-llama3-70b-tp4",
)
SHAPE_PRESET_NAMES: tuple[str, ...] = (
    "h100-qwen3-14b-tp1",
    "h100-qwen3-32b-tp2",
    "h100-gpt-oss-120b-tp2",
    "h100-gpt-oss-120b-tp4",
    "rtx4090-llama3.1-8b-tp1",
    "rtxpro6000-llama3.1-8b-tp1",
    "rtxpro6000-qwen3-32b-tp2",
)
PRESET_NAMES: tuple[str, ...] = CALIBRATED_PRESET_NAMES + SHAPE_PRESET_NAMES
BLOCK_SIZE = 16  # vLLM's default KV block size (tokens)

# Presets read from a user's YAML file in this process (register_preset_file): name -> spec.
_USER_SPECS: dict[str, tuple] = {}


def list_presets() -> list[str]:
    """Names accepted by :func:`get_preset` (shipped ones, then those registered from a file)."""
    return list(PRESET_NAMES) + [n for n in _USER_SPECS if n not in PRESET_NAMES]


def _check_name(name: str) -> None:
    if name not in PRESET_NAMES and name not in _USER_SPECS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(list_presets())}")


def _spec(name: str) -> tuple:
    """(name, model, gpu, tp, knobs) of a shape preset, shipped or registered."""
    return _USER_SPECS[name] if name in _USER_SPECS else _shipped_spec(name)


@lru_cache(maxsize=None)
def _shipped_spec(name: str) -> tuple:
    from arrow_rl.perf.preset_spec import parse_preset_spec

    path = resources.files("arrow_rl.perf").joinpath("data", "shape_presets", f"{name}.yaml")
    return parse_preset_spec(yaml.safe_load(path.read_text()), f"shape_presets/{name}.yaml")


def register_preset_file(path: str | Path) -> str:
    """Read a preset YAML (``preset_spec.py``), make it known by its name, and return the name.

    A shipped preset's name cannot be redefined; registering the same file again is harmless."""
    from arrow_rl.perf.preset_spec import load_preset_spec
    from arrow_rl.perf.model_config import PresetSpecError

    spec = load_preset_spec(path)
    name = spec[0]
    if name in PRESET_NAMES:
        raise PresetSpecError(f"{path}: field 'name': {name!r} is a shipped preset; choose another name")
    if _USER_SPECS.get(name) != spec:
        _USER_SPECS[name] = spec
        load_preset_document.cache_clear()
        latency_model.cache_clear()
    return name


def resolve_preset_name(name_or_path: str) -> str:
    """A preset name as given, or the name of the YAML file it points to (registered on the way)."""
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        return register_preset_file(name_or_path)
    _check_name(name_or_path)
    return name_or_path


def is_shape_preset(name: str) -> bool:
    """Built from a model's shape (its KV capacity follows vLLM's accounting, model_config.py)."""
    return name in SHAPE_PRESET_NAMES or name in _USER_SPECS


@lru_cache(maxsize=None)
def load_preset_document(name: str) -> dict[str, Any]:
    """The document of preset ``name`` (cached; treat as read-only)."""
    _check_name(name)
    if is_shape_preset(name):
        from arrow_rl.perf.model_config import preset_document

        _, model, gpu, tp, knobs = _spec(name)
        return preset_document(name, model, gpu, tp, knobs, load_preset_document)
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
    if "engine_knobs" in doc:  # a shape preset states the server's knobs
        return int(doc["engine_knobs"]["max_num_batched_tokens"]), int(doc["engine_knobs"]["max_num_seqs"])
    big = doc["gpu_memory_bytes"] >= 70 * 2**30 and "a100" not in doc["gpu"].lower()
    return (8192, 1024) if big else (2048, 256)


def kv_capacity_tokens(doc: dict[str, Any], gpu_memory_utilization: float) -> int:
    """(GPU mem × TP × utilization − weights − activation reserve) / KV bytes per token, in whole blocks.

    A shape preset follows vLLM's accounting instead (``model_config.kv_accounting``); the blocks
    its server reported, when stated, hold at the utilization it ran with."""
    if "kv_accounting" in doc:
        return _shape_kv_blocks(doc["name"], gpu_memory_utilization) * BLOCK_SIZE
    tp = int(doc["tp"])
    free = (doc["gpu_memory_bytes"] * tp * gpu_memory_utilization - doc["weight_bytes"]
            - doc["activation_reserve_bytes_per_gpu"] * tp)
    blocks = int(free // (doc["kv_bytes_per_token"] * BLOCK_SIZE))
    return max(blocks, 0) * BLOCK_SIZE


def _shape_kv_blocks(name: str, gpu_memory_utilization: float) -> int:
    from dataclasses import replace

    from arrow_rl.perf.model_config import kv_accounting

    _, model, gpu, tp, knobs = _spec(name)
    if gpu_memory_utilization != knobs.gpu_memory_utilization:
        knobs = replace(knobs, gpu_memory_utilization=gpu_memory_utilization, num_gpu_blocks=None)
    return kv_accounting(model, gpu, tp, knobs).num_gpu_blocks


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
