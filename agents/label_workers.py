"""Env processes that step independently: imitation labelling without a lock-step.

A ``VecEnv`` steps all its envs together, so each step waits for the slowest. For the privileged
lookahead teacher that is most of the time: its cost grows with the cluster (a 32-instance
episode plans several times longer than a 4-instance one), and with 8 envs on 2 cores a long run
used 1.2 cores on average (docs/agents.md). ``EnvWorkers`` gives each env its own process and
lets the caller talk to whichever env is ready (``ready``), so a fast env runs ahead while a slow
one plans. ``agents.imitation.collect`` drives it so that every env still sees exactly the
teacher/student coin flips and actions of the lock-step loop: same seed, same samples.

Each step answers with everything collection needs in one round trip: the next observation, the
reward, whether the episode ended (then the env is reset in the worker and the reset's ``info``
labels the next episode's first state), and the next state's action mask.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from multiprocessing.connection import wait
from typing import Any, Callable, Iterable, Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import CloudpickleWrapper


def env_masks(env: gym.Env) -> np.ndarray:
    """Action mask of a (possibly wrapped) env; all-valid when it offers none."""
    try:
        fn = env.get_wrapper_attr("action_masks")
    except AttributeError:
        return np.ones(env.action_space.n, dtype=bool)
    return np.asarray(fn(), dtype=bool)


def _worker(remote: Any, parent_remote: Any, thunk: CloudpickleWrapper) -> None:
    parent_remote.close()
    env = None
    try:
        env = thunk.var()
        while True:
            cmd, data = remote.recv()
            if cmd == "spaces":
                remote.send((env.observation_space, env.action_space))
            elif cmd == "reset":
                obs, info = env.reset(seed=data)
                remote.send(("reset", obs, info, env_masks(env)))
            elif cmd == "step":
                obs, reward, terminated, truncated, info = env.step(data)
                done = bool(terminated or truncated)
                next_info = info
                if done:
                    obs, next_info = env.reset()
                remote.send(("step", obs, float(reward), done, info, next_info, env_masks(env)))
            elif cmd == "close":
                break
            else:
                raise ValueError(f"unknown command {cmd!r}")
    except EOFError:   # the parent went away
        pass
    except Exception:  # noqa: BLE001 - reported to the parent, which raises it with the env's index
        remote.send(("error", traceback.format_exc()))
    finally:
        if env is not None:
            env.close()
        remote.close()


class EnvWorkerError(RuntimeError):
    """An env raised inside its worker process; the message carries its traceback."""


class EnvWorkers:
    """``len(thunks)`` envs, one process each, stepped independently (module docstring)."""

    def __init__(self, thunks: Sequence[Callable[[], gym.Env]], start_method: str = "spawn") -> None:
        if not thunks:
            raise ValueError("EnvWorkers needs at least one env")
        ctx = mp.get_context(start_method)
        pipes = [ctx.Pipe() for _ in thunks]
        self.remotes = [parent for parent, _ in pipes]
        self.processes = []
        for (parent, child), thunk in zip(pipes, thunks):
            p = ctx.Process(target=_worker, args=(child, parent, CloudpickleWrapper(thunk)), daemon=True)
            p.start()
            child.close()
            self.processes.append(p)
        self.num_envs = len(thunks)
        self.closed = False
        for r in self.remotes:   # every env built (a bad one fails here, by index) before any is used
            r.send(("spaces", None))
        spaces = [self._recv(i) for i in range(self.num_envs)]
        self.observation_space, self.action_space = spaces[0]

    def _recv(self, i: int) -> Any:
        try:
            msg = self.remotes[i].recv()
        except EOFError:
            raise EnvWorkerError(f"labelling env {i}: its worker process died (exit code "
                                 f"{self.processes[i].exitcode})") from None
        if isinstance(msg, tuple) and msg and msg[0] == "error":
            raise EnvWorkerError(f"labelling env {i} failed in its worker process:\n{msg[1]}")
        return msg

    def send(self, i: int, cmd: str, data: Any = None) -> None:
        self.remotes[i].send((cmd, data))

    def recv(self, i: int) -> Any:
        """The answer of env ``i`` to its last command (``("reset", obs, info, mask)`` or
        ``("step", obs, reward, done, info, next_info, mask)``)."""
        return self._recv(i)

    def ready(self, envs: Iterable[int]) -> list[int]:
        """Those of ``envs`` whose answer has arrived (blocks until one has), lowest index first."""
        waiting = {self.remotes[i]: i for i in envs}
        return sorted(waiting[r] for r in wait(list(waiting)))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for r in self.remotes:
            try:
                r.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for p in self.processes:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
