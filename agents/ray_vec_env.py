"""Environment workers as Ray actors, wrapped as an SB3 ``VecEnv`` (``vec_env: ray``).

Why actors holding several envs: one emulator step costs ~1 ms, about what a Ray actor call
costs, so one actor per env would spend half its time messaging. Each ``EnvWorker`` holds
``envs_per_worker`` envs and steps them as a batch: one call per worker per step, workers in
parallel (on as many machines as the Ray cluster has). The learner stays on the driver.

Semantics follow SB3's ``DummyVecEnv``/``SubprocVecEnv`` exactly (auto-reset with
``terminal_observation`` and ``TimeLimit.truncated`` in the info, seeds and options used at the
next ``reset`` only, rewards as float32), so the same seed gives the same observations and
rewards as the local vector env (``tests/test_ray_vec_env.py``), and every SB3 algorithm, the
action masks of MaskablePPO (``env_method("action_masks")``) and ``VecNormalize`` work unchanged.
Workers send each env's action mask with its step results, so MaskablePPO's mask query before
each step is answered on the driver instead of costing a second round trip.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn


MASK_METHOD = "action_masks"


class EnvWorker:
    """A batch of envs in one Ray actor process (created by ``RayVecEnv``)."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]]) -> None:
        self.envs = [fn() for fn in env_fns]
        self.masked = self.has_attr(MASK_METHOD)

    def _masks(self) -> list[np.ndarray] | None:
        """Every env's action mask after a step or reset, sent with its results (MaskablePPO asks
        for them before every step: this saves a second round trip per step)."""
        return [env.get_wrapper_attr(MASK_METHOD)() for env in self.envs] if self.masked else None

    def spaces(self) -> tuple[spaces.Space, spaces.Space, dict, str | None]:
        env = self.envs[0]
        return env.observation_space, env.action_space, dict(env.metadata or {}), env.render_mode

    def reset(self, seeds: list[int | None], options: list[dict]) -> tuple[list[tuple[Any, dict]], Any]:
        out = []
        for env, seed, opts in zip(self.envs, seeds, options):
            out.append(env.reset(seed=seed, **({"options": opts} if opts else {})))
        return out, self._masks()

    def step(self, actions: np.ndarray) -> tuple[list[tuple[Any, float, bool, dict, dict | None]], Any]:
        out = []
        for env, action in zip(self.envs, actions):
            obs, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            reset_info = None
            if done:  # save the final observation where SB3 looks for it, then reset (SB3 VecEnv API)
                info["terminal_observation"] = obs
                obs, reset_info = env.reset()
            out.append((obs, reward, done, info, reset_info))
        return out, self._masks()

    def get_attr(self, name: str, local: list[int]) -> list[Any]:
        return [self.envs[i].get_wrapper_attr(name) for i in local]

    def has_attr(self, name: str) -> bool:
        try:
            self.envs[0].get_wrapper_attr(name)
            return True
        except AttributeError:
            return False

    def set_attr(self, name: str, value: Any, local: list[int]) -> None:
        for i in local:
            setattr(self.envs[i], name, value)

    def env_method(self, name: str, args: tuple, kwargs: dict, local: list[int]) -> list[Any]:
        return [self.envs[i].get_wrapper_attr(name)(*args, **kwargs) for i in local]

    def env_is_wrapped(self, wrapper_class: type, local: list[int]) -> list[bool]:
        from stable_baselines3.common.env_util import is_wrapped

        return [is_wrapped(self.envs[i], wrapper_class) for i in local]

    def render(self) -> list[Any]:
        return [env.render() for env in self.envs]

    def close(self) -> None:
        for env in self.envs:
            env.close()


class RayVecEnv(VecEnv):
    """``len(env_fns)`` envs in ``ceil(n / envs_per_worker)`` Ray actors (env ``i`` lives in worker
    ``i // envs_per_worker``, so env order, and with it seeding, matches the local VecEnvs).
    ``address``: a Ray cluster (``auto`` or ``HOST:PORT``), or None for the current connection
    or a private local Ray. ``cpus_per_worker``: what each actor reserves on the cluster. Workers
    that Ray cannot place within ``start_timeout_s`` (the cluster lacks the CPUs) are an error
    naming what was asked and what is free, instead of a run that waits forever."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], envs_per_worker: int = 4,
                 address: str | None = None, cpus_per_worker: float = 1.0, start_timeout_s: float = 120.0) -> None:
        from arrow_rl.evaluation.ray_backend import connect, disconnect, require_ray

        if envs_per_worker < 1:
            raise ValueError(f"envs_per_worker must be >= 1, got {envs_per_worker}")
        ray = require_ray()
        self._ray = ray
        self._started = connect(address)
        chunks = [list(env_fns[i:i + envs_per_worker]) for i in range(0, len(env_fns), envs_per_worker)]
        actor = ray.remote(num_cpus=cpus_per_worker, max_restarts=0)(EnvWorker)
        self.workers = [actor.remote(chunk) for chunk in chunks]
        self._sizes = [len(c) for c in chunks]
        self._bounds = np.cumsum([0] + self._sizes)
        probes = [w.spaces.remote() for w in self.workers]
        ready, _ = ray.wait(probes, num_returns=len(probes), timeout=start_timeout_s)
        if len(ready) < len(probes):
            free = ray.available_resources().get("CPU", 0.0)
            for w in self.workers:
                ray.kill(w)
            disconnect(self._started)
            raise ValueError(
                f"Ray started {len(ready)} of {len(self.workers)} env workers ({cpus_per_worker:g} CPU each) within "
                f"{start_timeout_s:g} s; the cluster has {free:g} CPUs free: lower n_envs, raise ray.envs_per_worker "
                "or lower ray.cpus_per_worker")
        obs_space, action_space, metadata, render_mode = ray.get(probes[0])
        super().__init__(len(env_fns), obs_space, action_space)
        self.metadata = metadata
        self.render_mode = render_mode
        self._pending: list[Any] | None = None
        self._mask_cache: list[np.ndarray] | None = None  # masks sent with the last step/reset
        self.closed = False

    # ---- stepping -------------------------------------------------------------------------------
    def step_async(self, actions: np.ndarray) -> None:
        self._pending = [w.step.remote(actions[a:b]) for w, a, b in zip(self.workers, self._bounds[:-1],
                                                                           self._bounds[1:])]

    def _unpack(self, replies: list[tuple[list, Any]]) -> list[Any]:
        """Results of every worker, in env order; the action masks that came with them cached."""
        masks = [m for _, batch in replies for m in (batch or [])]
        self._mask_cache = masks if len(masks) == self.num_envs else None
        return [r for batch, _ in replies for r in batch]

    def step_wait(self) -> VecEnvStepReturn:
        results = self._unpack(self._ray.get(self._pending))
        self._pending = None
        obs, rews, dones, infos, reset_infos = zip(*results)
        for i, info in enumerate(reset_infos):
            if info is not None:
                self.reset_infos[i] = info
        return (self._stack(obs), np.array(rews, dtype=np.float32), np.array(dones, dtype=bool), list(infos))

    def reset(self) -> VecEnvObs:
        refs = [w.reset.remote(self._seeds[a:b], self._options[a:b])
                for w, a, b in zip(self.workers, self._bounds[:-1], self._bounds[1:])]
        results = self._unpack(self._ray.get(refs))
        obs = [o for o, _ in results]
        self.reset_infos = [info for _, info in results]
        self._reset_seeds()  # seeds and options are used once (SB3 VecEnv contract)
        self._reset_options()
        return self._stack(obs)

    def _stack(self, obs: Sequence[Any]) -> VecEnvObs:
        if isinstance(self.observation_space, spaces.Dict):
            return {k: np.stack([o[k] for o in obs]) for k in self.observation_space.spaces}
        return np.stack(obs)

    def close(self) -> None:
        if self.closed:
            return
        from arrow_rl.evaluation.ray_backend import disconnect

        if self._pending is not None:
            self._ray.get(self._pending)
        self._ray.get([w.close.remote() for w in self.workers])
        for w in self.workers:
            self._ray.kill(w)
        self.closed = True
        disconnect(self._started)

    # ---- attributes and methods of the envs -----------------------------------------------------
    def _targets(self, indices: VecEnvIndices) -> list[tuple[int, list[int]]]:
        """(worker, local indices) for the global ``indices``, workers in order."""
        by_worker: dict[int, list[int]] = {}
        for i in self._get_indices(indices):
            w = int(np.searchsorted(self._bounds, i, side="right")) - 1
            by_worker.setdefault(w, []).append(int(i - self._bounds[w]))
        return sorted(by_worker.items())

    def _call(self, method: str, indices: VecEnvIndices, *args: Any) -> list[Any]:
        targets = self._targets(indices)
        refs = [getattr(self.workers[w], method).remote(*args, local) for w, local in targets]
        return [x for batch in self._ray.get(refs) for x in (batch or [])]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._call("get_attr", indices, attr_name)

    def has_attr(self, attr_name: str) -> bool:
        return bool(self._ray.get(self.workers[0].has_attr.remote(attr_name)))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._mask_cache = None  # the envs may change: masks are asked for again
        self._call("set_attr", indices, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        if method_name == MASK_METHOD and not method_args and not method_kwargs and self._mask_cache is not None:
            return [self._mask_cache[i].copy() for i in self._get_indices(indices)]
        self._mask_cache = None  # any other call may change an env's state
        return self._call("env_method", indices, method_name, method_args, method_kwargs)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self._call("env_is_wrapped", indices, wrapper_class)

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [img for batch in self._ray.get([w.render.remote() for w in self.workers]) for img in batch]


def worker_count(n_envs: int, envs_per_worker: int) -> int:
    return math.ceil(n_envs / envs_per_worker)
