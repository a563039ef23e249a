"""Read a preset from a small YAML a user writes (or one shipped by name) and check every field.

::

    name: h100-qwen3-14b-tp1
    gpu: H100-80GB-SXM            # one of model_config.GPUS
    tp: 1
    model:                        # the model's config.json
      name: Qwen3-14B
      layers: 40                  # num_hidden_layers
      hidden: 5120                # hidden_size
      heads: 40                   # num_attention_heads
      kv_heads: 8                 # num_key_value_heads
      head_dim: 128               # optional (hidden / heads)
      intermediate: 17408         # intermediate_size (per expert for MoE)
      vocab: 151936
      experts: 0                  # optional: num_local_experts, experts_per_token
      max_model_len: 40960
    engine:                       # optional: vllm serve knobs (unset: what vllm serve picks on the GPU)
      gpu_memory_utilization: 0.9
      max_num_batched_tokens: 8192
      max_num_seqs: 256
      num_gpu_blocks: 18038       # optional: what the server reported (wins over the accounting)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from arrow_rl.perf.model_config import GPUS, EngineKnobs, GpuSpec, ModelConfig, PresetSpecError, serve_defaults

_MODEL_INT = ("layers", "hidden", "heads", "kv_heads", "intermediate", "vocab")
_MODEL_OPT_INT = ("head_dim", "experts", "experts_per_token", "max_model_len")
_ENGINE_INT = ("max_num_batched_tokens", "max_num_seqs", "block_size", "num_gpu_blocks", "activation_peak_bytes")


def _positive_int(node: dict[str, Any], key: str, where: str, *, zero_ok: bool = False) -> int:
    v = node[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < (0 if zero_ok else 1):
        raise PresetSpecError(f"{where}: field {key!r} must be an integer {'>= 0' if zero_ok else '> 0'}, got {v!r}")
    return v


def _mapping(node: Any, key: str, where: str, required: bool = True) -> dict[str, Any]:
    if key not in node:
        if required:
            raise PresetSpecError(f"{where}: missing field {key!r}")
        return {}
    if not isinstance(node[key], dict):
        raise PresetSpecError(f"{where}: field {key!r} must be a mapping, got {node[key]!r}")
    return node[key]


def parse_preset_spec(doc: Any, where: str) -> tuple[str, ModelConfig, GpuSpec, int, EngineKnobs]:
    """(name, model, gpu, tp, knobs) from a parsed YAML document; ``where`` names it in errors."""
    if not isinstance(doc, dict):
        raise PresetSpecError(f"{where}: expected a mapping, got {type(doc).__name__}")
    unknown = sorted(set(doc) - {"name", "gpu", "tp", "model", "engine", "source"})
    if unknown:
        raise PresetSpecError(f"{where}: unknown field {unknown[0]!r}")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise PresetSpecError(f"{where}: field 'name' must be a non-empty string")
    gpu_name = doc.get("gpu")
    if gpu_name not in GPUS:
        raise PresetSpecError(f"{where}: field 'gpu' must be one of {', '.join(GPUS)}, got {gpu_name!r}")
    if "tp" not in doc:
        raise PresetSpecError(f"{where}: missing field 'tp'")
    tp = _positive_int(doc, "tp", where)
    m = _mapping(doc, "model", where)
    mw = f"{where}: model"
    for key in _MODEL_INT:
        if key not in m:
            raise PresetSpecError(f"{mw}: missing field {key!r}")
    unknown = sorted(set(m) - set(_MODEL_INT) - set(_MODEL_OPT_INT)
                     - {"name", "tie_embeddings", "expert_weight_bits", "source"})
    if unknown:
        raise PresetSpecError(f"{mw}: unknown field {unknown[0]!r}")
    ints = {k: _positive_int(m, k, mw) for k in _MODEL_INT}
    opt = {k: _positive_int(m, k, mw, zero_ok=k.startswith("experts")) for k in _MODEL_OPT_INT if k in m}
    if ints["heads"] % ints["kv_heads"]:
        raise PresetSpecError(f"{mw}: field 'heads' ({ints['heads']}) must be a multiple of 'kv_heads' "
                              f"({ints['kv_heads']})")
    if bool(opt.get("experts")) != bool(opt.get("experts_per_token")):
        raise PresetSpecError(f"{mw}: give both 'experts' and 'experts_per_token', or neither")
    bits = m.get("expert_weight_bits", 16.0)
    if isinstance(bits, bool) or not isinstance(bits, (int, float)) or not 1 <= bits <= 32:
        raise PresetSpecError(f"{mw}: field 'expert_weight_bits' must be a number in [1, 32], got {bits!r}")
    model = ModelConfig(name=str(m.get("name", name)), **ints, **opt,
                        tie_embeddings=bool(m.get("tie_embeddings", False)), expert_weight_bits=float(bits),
                        source=str(m.get("source", doc.get("source", ""))))
    e = _mapping(doc, "engine", where, required=False)
    ew = f"{where}: engine"
    unknown = sorted(set(e) - set(_ENGINE_INT) - {"gpu_memory_utilization"})
    if unknown:
        raise PresetSpecError(f"{ew}: unknown field {unknown[0]!r}")
    knobs_kw: dict[str, Any] = {k: _positive_int(e, k, ew) for k in _ENGINE_INT if k in e}
    for key, default in zip(("max_num_batched_tokens", "max_num_seqs"), serve_defaults(GPUS[gpu_name])):
        knobs_kw.setdefault(key, default)
    if "gpu_memory_utilization" in e:
        u = e["gpu_memory_utilization"]
        if isinstance(u, bool) or not isinstance(u, (int, float)) or not 0 < u <= 1:
            raise PresetSpecError(f"{ew}: field 'gpu_memory_utilization' must be in (0, 1], got {u!r}")
        knobs_kw["gpu_memory_utilization"] = float(u)
    return name, model, GPUS[gpu_name], tp, EngineKnobs(**knobs_kw)


def load_preset_spec(path: str | Path) -> tuple[str, ModelConfig, GpuSpec, int, EngineKnobs]:
    """Read and check a preset YAML; :class:`PresetSpecError` names the file and the field."""
    p = Path(path)
    if not p.is_file():
        raise PresetSpecError(f"{p}: no such preset file")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PresetSpecError(f"{p}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_preset_spec(doc, str(p))


__all__ = ["load_preset_spec", "parse_preset_spec"]
