"""How the trainers create environments and read their episode results.

Kept apart from ``agents.train`` so that the trainers only know the gymnasium contract
(``action_masks()``, ``info["teacher_action"]``) and this module alone knows how ``PDClusterEnv``
is configured (``envs.config.EnvConfig``) and what its episode-end ``info`` holds.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from agents.toy import TOY_ENV_ID, register_toy_env

# Episode-end info keys of PDClusterEnv (envs/pd_cluster_env.py): SLO attainment over offered
# requests (unfinished = miss, Arrow §6.1), goodput (requests within SLO per second), flip count.
ATTAINMENT_KEYS = ("episode_slo_attainment", "slo_attainment")
GOODPUT_KEYS = ("episode_goodput", "goodput")
FLIP_KEYS = ("flip_count", "episode_flips")
DURATION_KEYS = ("episode_duration_s", "duration_s")


def is_toy(env_id: str) -> bool:
    return env_id == TOY_ENV_ID


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (override wins), so eval overrides can change ``episode.traces`` alone."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def env_config(env_id: str, kwargs: dict[str, Any]):
    """The validated ``EnvConfig`` a PD-cluster env block resolves to: the registered variant's
    config with the block's fields merged over it (None for the toy env). Errors name the field."""
    if is_toy(env_id):
        return None
    import envs  # noqa: F401  (registers arrow_rl/PDCluster-v0 and variants)
    from envs.pd_cluster_env import resolve_config

    try:
        spec = gym.spec(env_id)
    except gym.error.Error as exc:
        raise ValueError(f"env.id {env_id!r}: {exc}") from None
    base = dict(spec.kwargs or {})
    return resolve_config(base.pop("config", None), {**base, **kwargs})


def check_traces(env_id: str, kwargs: dict[str, Any], where: str = "env") -> None:
    """Load every trace an env block names (into the env's per-process cache), so that a missing or
    malformed trace fails with its field's name before a model is built or a worker started."""
    cfg = env_config(env_id, kwargs)
    if cfg is None or cfg.episode.generator is not None:
        return
    from arrow_rl.workload.loaders import TraceFormatError
    from envs.pd_cluster_env import load_trace_cached

    for i, name in enumerate(cfg.episode.traces):
        try:
            load_trace_cached(name)
        except (TraceFormatError, OSError, ValueError) as exc:
            raise ValueError(f"{where}.episode.traces[{i}]: {exc}") from None


def resolved_env_kwargs(env_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The block as one full config mapping (variant defaults included), JSON-friendly."""
    cfg = env_config(env_id, kwargs)
    return dict(kwargs) if cfg is None else cfg.model_dump(mode="json")


def make_env(env_id: str, kwargs: dict[str, Any]) -> gym.Env:
    """One environment instance (no VecEnv, no Monitor). PD-cluster kwargs merge over the variant's
    registered config (``PDClusterEnv`` merges keyword overrides field by field)."""
    if is_toy(env_id):
        register_toy_env()
        return gym.make(env_id, **kwargs)
    import envs  # noqa: F401  (registers arrow_rl/PDCluster-v0 and variants)

    return gym.make(env_id, **kwargs)


def env_thunk(env_id: str, kwargs: dict[str, Any], monitor: bool = True) -> Callable[[], gym.Env]:
    """A picklable factory for SB3 VecEnvs: one torch thread per worker process."""

    def _init() -> gym.Env:
        import torch

        torch.set_num_threads(1)
        env = make_env(env_id, kwargs)
        if monitor:
            from stable_baselines3.common.monitor import Monitor

            env = Monitor(env, info_keywords=())
        return env

    return _init


def with_rate_scale(env_id: str, kwargs: dict[str, Any], scale: float) -> dict[str, Any]:
    """Env kwargs whose episodes replay at a fixed rate scale (Arrow §6.1 timestamp scaling)."""
    if is_toy(env_id):
        return dict(kwargs)
    return deep_merge(kwargs, {"episode": {"rate_scale": [scale, scale]}})


def _first(info: dict[str, Any], keys: tuple[str, ...], default: float = float("nan")) -> float:
    for k in keys:
        if k in info and info[k] is not None:
            return float(info[k])
    return default


def episode_result(final_info: dict[str, Any], total_reward: float, steps: int, control_interval_s: float) -> dict[str, float]:
    """Episode metrics from the env's episode-end info (toy env: reward only)."""
    stats = final_info.get("episode_stats") or {}
    duration = _first(final_info, DURATION_KEYS, steps * control_interval_s)
    flips = _first(final_info, FLIP_KEYS, float("nan"))
    if "flips_per_min" in stats:
        flips_per_min = float(stats["flips_per_min"])
    else:
        flips_per_min = flips / duration * 60.0 if duration > 0 and np.isfinite(flips) else float("nan")
    return {
        "reward": float(total_reward),
        "steps": float(steps),
        "attainment": _first(final_info, ATTAINMENT_KEYS),
        "goodput": _first(final_info, GOODPUT_KEYS),
        "flips_per_min": flips_per_min,
    }
