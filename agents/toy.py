"""A tiny stand-in for ``PDClusterEnv`` with the same teaching contract, for testing the trainers.

The trainers (behaviour cloning, DAgger, SB3 fine-tuning, checkpoints) only rely on three things
of an environment: a discrete action space, ``action_masks()``, and ``info["teacher_action"]``.
This env has all three and runs in microseconds, so the trainer tests do not depend on the
emulator. It is a caricature of instance scheduling: ``k`` of ``n`` instances serve prefill, a
hidden demand drifts, the observation shows noisy load signals, and the teacher moves ``k`` one
step toward the demand's ideal split (no-op, one P->D, one D->P), never emptying a pool.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

TOY_ENV_ID = "agents/TeacherToy-v0"

NOOP, PREFILL_TO_DECODE, DECODE_TO_PREFILL = 0, 1, 2


class TeacherToyEnv(gym.Env):
    """Discrete(3) actions, masked at the pool bounds; the teacher's action is in ``info``."""

    metadata = {"render_modes": []}

    def __init__(self, num_instances: int = 8, episode_steps: int = 64, noise: float = 0.05, obs_dim: int = 6) -> None:
        if num_instances < 2:
            raise ValueError(f"num_instances must be >= 2, got {num_instances}")
        if obs_dim < 4:
            raise ValueError(f"obs_dim must be >= 4, got {obs_dim}")
        self.num_instances = num_instances
        self.episode_steps = episode_steps
        self.noise = noise
        self.observation_space = spaces.Box(-5.0, 5.0, shape=(obs_dim,), dtype=np.float32)
        self.action_space = spaces.Discrete(3)
        self._k = num_instances // 2
        self._demand = 0.5
        self._t = 0

    # -- the teacher sees only the observation (as a deployed controller would) --------------
    @staticmethod
    def teacher_from_obs(obs: np.ndarray, num_instances: int) -> int:
        """Move the prefill share toward the observed demand share by one instance."""
        share, demand = float(obs[0]), float(obs[1])
        k = round(share * num_instances)
        target = int(np.clip(round(demand * num_instances), 1, num_instances - 1))
        if target > k:
            return DECODE_TO_PREFILL
        if target < k:
            return PREFILL_TO_DECODE
        return NOOP

    def action_masks(self) -> np.ndarray:
        return np.array([True, self._k > 1, self._k < self.num_instances - 1])

    def _obs(self) -> np.ndarray:
        n = self.num_instances
        obs = np.zeros(self.observation_space.shape, dtype=np.float32)
        obs[0] = self._k / n
        obs[1] = self._demand  # the teacher's signal
        obs[2] = self._demand - self._k / n
        obs[3] = self._t / self.episode_steps
        obs[4:] = self.np_random.normal(0.0, 1.0, size=obs.size - 4)  # distractors
        return obs

    def _info(self, obs: np.ndarray) -> dict[str, Any]:
        return {"teacher_action": self.teacher_from_obs(obs, self.num_instances)}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._k = self.num_instances // 2
        self._demand = float(self.np_random.uniform(0.15, 0.85))
        self._t = 0
        obs = self._obs()
        return obs, self._info(obs)

    def step(self, action):
        action = int(action)
        valid = bool(self.action_masks()[action])
        if valid and action == PREFILL_TO_DECODE:
            self._k -= 1
        elif valid and action == DECODE_TO_PREFILL:
            self._k += 1
        self._demand = float(np.clip(self._demand + self.np_random.normal(0.0, self.noise), 0.1, 0.9))
        self._t += 1
        ideal = self._demand * self.num_instances
        reward = 1.0 - abs(self._k - ideal) / self.num_instances
        obs = self._obs()
        info = self._info(obs)
        info["invalid_action"] = not valid
        return obs, reward, False, self._t >= self.episode_steps, info


def register_toy_env() -> None:
    """Register ``agents/TeacherToy-v0`` once (gymnasium 1.x has no plugin discovery)."""
    if TOY_ENV_ID not in gym.registry:
        gym.register(id=TOY_ENV_ID, entry_point="agents.toy:TeacherToyEnv")
