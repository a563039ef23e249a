"""Evaluation of a policy inside the environment on held-out episodes, against the teacher.

Used during training (``ArrowEvalCallback``) and for the final report. Each evaluation replays the
same held-out episodes (fixed seeds) at each configured rate scale, once with the student acting
deterministically (masked greedy, exactly what ``CheckpointController`` does) and once with the
teacher's action from ``info`` (the Arrow interval controller), and estimates each one's serving
rate: the rate scale at which SLO attainment crosses 90% (Arrow §6.1), interpolated between the
evaluated scales. It is an estimate on short windows; ``arrow-rl evaluate`` gives the real figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from agents.envs_bridge import episode_result, make_env, with_rate_scale
from agents.imitation import env_masks, teacher_action
from agents.inference import greedy_actions

ATTAINMENT_TARGET = 0.9  # Arrow §6.1: serving rate = highest rate with >= 90% SLO attainment

Chooser = Callable[[np.ndarray, np.ndarray, dict[str, Any]], int]


def serving_rate_estimate(scales: list[float], attainment: list[float], target: float = ATTAINMENT_TARGET) -> float:
    """Highest rate scale whose attainment reaches ``target``, linearly interpolated at the first
    crossing; below the lowest scale it extrapolates proportionally (attainment / target · scale),
    above the highest it returns the highest (a lower bound)."""
    s = np.asarray(scales, float)
    a = np.asarray(attainment, float)
    if s.size == 0 or np.all(np.isnan(a)):
        return float("nan")
    a = np.nan_to_num(a, nan=0.0)
    if a[0] < target:
        return float(s[0] * a[0] / target)
    for i in range(1, s.size):
        if a[i] < target:
            # a[i-1] >= target > a[i]
            frac = (a[i - 1] - target) / (a[i - 1] - a[i])
            return float(s[i - 1] + frac * (s[i] - s[i - 1]))
    return float(s[-1])


def run_episode(env: gym.Env, choose: Chooser, seed: int, control_interval_s: float) -> dict[str, float]:
    obs, info = env.reset(seed=seed)
    total, steps = 0.0, 0
    while True:
        action = choose(np.asarray(obs, np.float32), env_masks(env), info)
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        steps += 1
        if terminated or truncated:
            return episode_result(info, total, steps, control_interval_s)


def teacher_chooser(obs: np.ndarray, masks: np.ndarray, info: dict[str, Any]) -> int:
    return teacher_action(info)


def student_chooser(model, normalize: Callable[[np.ndarray], np.ndarray]) -> Chooser:
    def choose(obs: np.ndarray, masks: np.ndarray, info: dict[str, Any]) -> int:
        return int(greedy_actions(model, normalize(obs)[None], masks[None])[0])

    return choose


@dataclass
class EvalSummary:
    """Mean metrics per rate scale plus the serving-rate estimate."""

    scales: list[float]
    per_scale: list[dict[str, float]]
    serving_rate: float
    episodes: list[dict[str, float]] = field(default_factory=list)

    def mean(self, key: str) -> float:
        vals = [m[key] for m in self.per_scale if np.isfinite(m.get(key, np.nan))]
        return float(np.mean(vals)) if vals else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"scales": self.scales, "per_scale": self.per_scale, "serving_rate_scale": self.serving_rate}


class HeldOutEvaluator:
    """Owns one env per rate scale (created once) and evaluates choosers on fixed seeds."""

    def __init__(self, env_id: str, kwargs: dict[str, Any], rate_scales: list[float], n_episodes: int, seed: int,
                 control_interval_s: float = 1.0) -> None:
        self.scales = list(rate_scales)
        self.n_episodes = n_episodes
        self.seed = seed
        self.control_interval_s = control_interval_s
        self.envs = [make_env(env_id, with_rate_scale(env_id, kwargs, s)) for s in self.scales]

    def evaluate(self, choose: Chooser) -> EvalSummary:
        per_scale, episodes = [], []
        for scale, env in zip(self.scales, self.envs):
            runs = [run_episode(env, choose, self.seed + j, self.control_interval_s) for j in range(self.n_episodes)]
            for r in runs:
                r["rate_scale"] = scale
            episodes += runs
            keys = runs[0].keys()
            per_scale.append({k: float(np.nanmean([r[k] for r in runs])) if not all(np.isnan(r[k]) for r in runs) else float("nan") for k in keys})
        rate = serving_rate_estimate(self.scales, [m["attainment"] for m in per_scale])
        return EvalSummary(self.scales, per_scale, rate, episodes)

    def close(self) -> None:
        for env in self.envs:
            env.close()
