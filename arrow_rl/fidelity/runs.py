"""Read inference-perf run folders: the knobs the server ran with and what each stage measured.

Layout (one run = one vLLM server, several constant-rate stages)::

    <run>/exp-config.yaml                          model, tensor_parallelism, max_model_len,
                                                   max_num_batched_tokens, max_num_seqs
    <run>/profile.yaml                             the load generator's config (JSON despite its name)
    <run>/results/stage_<i>_lifecycle_metrics.json per stage: latency tables, prompt_len table

Pitfalls handled here (see docs/fidelity.md): the client re-tokenizes streamed text and undercounts
output tokens, so the output length is the *configured* ``output_len`` (the runs use ``ignore_eos``),
and TPOT is derived as (e2e − TTFT)/(output_len − 1) from the means.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# inference-perf's percentile keys, in order, with the quantile each one stands for.
PERCENTILE_KEYS: tuple[tuple[str, float], ...] = (
    ("min", 0.0), ("p0.1", 0.001), ("p1", 0.01), ("p5", 0.05), ("p10", 0.10), ("p25", 0.25),
    ("median", 0.50), ("p75", 0.75), ("p90", 0.90), ("p95", 0.95), ("p99", 0.99), ("p99.9", 0.999),
    ("max", 1.0))


class RunFormatError(ValueError):
    """A run folder that is not an inference-perf run; the message names the file and the field."""


@dataclass(frozen=True)
class SharedPrefix:
    """inference-perf's ``shared_prefix`` data: groups of users sharing one system prompt."""

    num_groups: int
    users_per_group: int
    system_prompt_len: int
    question_len: int


@dataclass(frozen=True)
class RealStage:
    """One constant-rate stage as measured (means in seconds)."""

    index: int
    rate: float
    duration_s: float
    output_len: int
    prompt_quantiles: tuple[tuple[float, float], ...]  # (quantile, tokens), non-decreasing
    prompt_mean: float
    sent: int
    finished: int
    failed: int
    ttft_mean: float
    e2e_mean: float
    failure_latency_min: float | None  # the client's time-out, when requests failed by timing out

    @property
    def tpot_mean(self) -> float:
        """(e2e − TTFT)/(output_len − 1) with the configured output length (the runs' ``ignore_eos``)."""
        return (self.e2e_mean - self.ttft_mean) / max(self.output_len - 1, 1)

    @property
    def throughput_rps(self) -> float:
        """Finished requests per second of stage duration (how saturated stages are judged)."""
        return self.finished / self.duration_s

    @property
    def saturated(self) -> bool:
        """Past one instance's capacity: requests failed, or fewer finished than were sent."""
        return self.failed > 0 or self.finished < self.sent


@dataclass(frozen=True)
class RealRun:
    """One real serving run: the server's knobs, the workload's shape and its stages."""

    name: str
    path: Path
    model: str
    tensor_parallelism: int
    max_model_len: int
    max_num_batched_tokens: int
    max_num_seqs: int
    shared_prefix: SharedPrefix | None
    streaming: bool
    stages: tuple[RealStage, ...]


def read_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML (or JSON) file holding a mapping; :class:`RunFormatError` says what is wrong and where."""
    if not path.is_file():
        raise RunFormatError(f"{path}: missing ({what})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RunFormatError(f"{path}: not valid YAML/JSON ({what}): {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise RunFormatError(f"{path}: expected a mapping ({what}), got {type(data).__name__}")
    return data


def _get(data: dict[str, Any], dotted: str, path: Path, kind: type | tuple[type, ...], *,
         positive: bool = False) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise RunFormatError(f"{path}: missing field {dotted!r}")
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, kind):
        raise RunFormatError(f"{path}: field {dotted!r} must be {getattr(kind, '__name__', kind)}, got {node!r}")
    if positive and not node > 0:
        raise RunFormatError(f"{path}: field {dotted!r} must be > 0, got {node!r}")
    return node


def _prompt_quantiles(table: dict[str, Any], path: Path) -> tuple[tuple[tuple[float, float], ...], float]:
    qs: list[tuple[float, float]] = []
    for key, q in PERCENTILE_KEYS:
        if key in table:
            v = table[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 1:
                raise RunFormatError(f"{path}: successes.prompt_len.{key} must be a token count >= 1, got {v!r}")
            qs.append((q, float(v)))
    if len(qs) < 2 or qs[0][0] != 0.0 or qs[-1][0] != 1.0:
        raise RunFormatError(f"{path}: successes.prompt_len needs at least 'min' and 'max'")
    if any(b[1] < a[1] for a, b in zip(qs, qs[1:])):
        raise RunFormatError(f"{path}: successes.prompt_len percentiles decrease")
    mean = _get(table, "mean", path, (int, float), positive=True)
    return tuple(qs), float(mean)


def _stage(path: Path, index: int, rate: float, duration: float, output_len: int) -> RealStage:
    data = read_mapping(path, f"stage {index} metrics")
    finished = int(_get(data, "successes.count", path, int))
    sent = int(_get(data, "load_summary.count", path, int))
    failures = data.get("failures") or {}
    failed = int(failures.get("count", 0)) if isinstance(failures, dict) else 0
    timeout = None
    if failed:
        lat = failures.get("request_latency") or {}
        if isinstance(lat, dict) and isinstance(lat.get("min"), (int, float)):
            timeout = float(lat["min"])
    if finished < 1:
        raise RunFormatError(f"{path}: successes.count is 0; nothing to compare")
    quantiles, mean = _prompt_quantiles(_get(data, "successes.prompt_len", path, dict), path)
    return RealStage(
        index=index, rate=rate, duration_s=duration, output_len=output_len,
        prompt_quantiles=quantiles, prompt_mean=mean, sent=sent, finished=finished, failed=failed,
        ttft_mean=float(_get(data, "successes.latency.time_to_first_token.mean", path, (int, float),
                             positive=True)),
        e2e_mean=float(_get(data, "successes.latency.request_latency.mean", path, (int, float), positive=True)),
        failure_latency_min=timeout)


def load_run(folder: str | Path) -> RealRun:
    """Read one inference-perf run folder; :class:`RunFormatError` names what is wrong and where."""
    root = Path(folder)
    if not root.is_dir():
        raise RunFormatError(f"{root}: not a directory (expected an inference-perf run folder)")
    exp_path = root / "exp-config.yaml"
    exp = read_mapping(exp_path, "server knobs")
    prof_path = root / "profile.yaml"
    prof = read_mapping(prof_path, "load-generator config")
    data_type = prof.get("data", {}).get("type") if isinstance(prof.get("data"), dict) else None
    shared = None
    if data_type == "shared_prefix":
        sp = _get(prof, "data.shared_prefix", prof_path, dict)
        output_len = int(_get(sp, "output_len", prof_path, int, positive=True))
        shared = SharedPrefix(
            num_groups=int(_get(sp, "num_unique_system_prompts", prof_path, int, positive=True)),
            users_per_group=int(_get(sp, "num_users_per_system_prompt", prof_path, int, positive=True)),
            system_prompt_len=int(_get(sp, "system_prompt_len", prof_path, int)),
            question_len=int(_get(sp, "question_len", prof_path, int, positive=True)))
    else:
        raise RunFormatError(f"{prof_path}: data.type {data_type!r} is not supported (only 'shared_prefix')")
    stages_cfg = _get(prof, "load.stages", prof_path, list)
    if not stages_cfg:
        raise RunFormatError(f"{prof_path}: load.stages is empty")
    stages = []
    for i, st in enumerate(stages_cfg):
        if not isinstance(st, dict):
            raise RunFormatError(f"{prof_path}: load.stages[{i}] must be a mapping")
        rate = float(_get(st, "rate", prof_path, (int, float), positive=True))
        duration = float(_get(st, "duration", prof_path, (int, float), positive=True))
        stages.append(_stage(root / "results" / f"stage_{i}_lifecycle_metrics.json", i, rate, duration, output_len))
    api = prof.get("api") if isinstance(prof.get("api"), dict) else {}
    return RealRun(
        name=root.name, path=root,
        model=str(_get(exp, "model", exp_path, str)),
        tensor_parallelism=int(_get(exp, "tensor_parallelism", exp_path, int, positive=True)),
        max_model_len=int(_get(exp, "max_model_len", exp_path, int, positive=True)),
        max_num_batched_tokens=int(_get(exp, "max_num_batched_tokens", exp_path, int, positive=True)),
        max_num_seqs=int(_get(exp, "max_num_seqs", exp_path, int, positive=True)),
        shared_prefix=shared, streaming=bool(api.get("streaming", True)), stages=tuple(stages))


# Which preset reproduces a run, by the model's name (case-insensitive, '/'-separated org dropped),
# tensor parallelism and GPU (None: an H100, or a run that does not say). Unknown models need an
# explicit --preset.
_MODEL_PRESETS: tuple[tuple[str, int, str | None, str], ...] = (
    (r"codellama-34b", 2, None, "h100-codellama-34b-tp2"),
    (r"mixtral-8x7b", 2, None, "h100-mixtral-8x7b-tp2"),
    (r"llama-2-7b", 1, None, "h100-llama2-7b-tp1"),
    (r"llama-2-70b", 4, None, "h100-llama2-70b-tp4"),
    (r"llama-3\.1-8b", 1, r"4090", "rtx4090-llama3.1-8b-tp1"),
    (r"llama-3\.1-8b", 1, r"rtx ?pro ?6000", "rtxpro6000-llama3.1-8b-tp1"),
    (r"llama-3\.1-8b", 1, None, "h100-llama3.1-8b-tp1"),
    (r"llama-3\.1-70b", 4, None, "h100-llama3.1-70b-tp4"),
    (r"qwen3-14b", 1, None, "h100-qwen3-14b-tp1"),
    (r"qwen3-32b", 2, r"rtx ?pro ?6000", "rtxpro6000-qwen3-32b-tp2"),
    (r"qwen3-32b", 2, None, "h100-qwen3-32b-tp2"),
    (r"gpt-oss-120b", 2, None, "h100-gpt-oss-120b-tp2"),
    (r"gpt-oss-120b", 4, None, "h100-gpt-oss-120b-tp4"),
)


def preset_for(run: Any) -> str | None:
    """The preset matching the run's model, tensor parallelism and GPU (``run.gpu`` if it has one), or None."""
    model = run.model.lower().rsplit("/", 1)[-1]
    if "[" in model:   # weights quantized beyond what the model's preset describes ("... [fp8]")
        return None
    gpu = (getattr(run, "gpu", None) or "").lower()
    for pattern, tp, gpu_pattern, preset in _MODEL_PRESETS:
        if not re.search(pattern, model) or tp != run.tensor_parallelism:
            continue
        if gpu_pattern is None and (not gpu or "h100" in gpu):
            return preset
        if gpu_pattern is not None and re.search(gpu_pattern, gpu):
            return preset
    return None


def summary_json(run: RealRun) -> dict[str, Any]:
    """A compact, JSON-able summary of a run: what the tests and the shipped sample keep."""
    return {"name": run.name, "model": run.model, "tensor_parallelism": run.tensor_parallelism,
            "knobs": {"max_model_len": run.max_model_len, "max_num_batched_tokens": run.max_num_batched_tokens,
                      "max_num_seqs": run.max_num_seqs},
            "shared_prefix": None if run.shared_prefix is None else vars(run.shared_prefix),
            "stages": [{"rate": s.rate, "duration_s": s.duration_s, "output_len": s.output_len,
                        "prompt_mean": s.prompt_mean, "sent": s.sent, "finished": s.finished,
                        "failed": s.failed, "ttft_mean": s.ttft_mean, "e2e_mean": s.e2e_mean}
                       for s in run.stages]}


__all__ = ["RealRun", "RealStage", "RunFormatError", "SharedPrefix", "load_run", "preset_for", "read_mapping",
           "summary_json"]
