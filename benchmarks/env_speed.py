"""PDClusterEnv speed: env steps per second with random (valid) actions, and where the time goes.

Setting (issue 4): an 8-instance cluster (H100, Llama-3.1-8B, TP1) serving the bundled Azure
conversation trace at its own load (rate scale 1.0), one control interval (1 s) per step, random
start windows, episodes of ``--duration`` seconds, one process. The cluster is wrapped in a timing
proxy (it implements the same ``Cluster`` interface), so the report splits wall time into the
emulator (``advance`` + ``instances`` + ``flip`` + ``completed``), the Arrow teacher (computing
``info["teacher_action"]``) and everything else in the env (observation, masks, reward, resets).

The baseline in the same process is the bare emulator advancing the same episodes with no env
around it; ``env/bare-emulator`` is the overhead factor of the env.

Times are CPU seconds of this (single-threaded) process (``time.process_time``), i.e. time on one
core, so the figure holds on a shared machine where wall time also counts other people's work;
wall-clock steps per second are printed too.

    python benchmarks/env_speed.py [--steps 3000] [--duration 300] [--no-teacher]

The last line is ``env_steps_per_second: N``.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
from typing import Sequence

import numpy as np

from arrow_rl.cluster.base import Cluster, ClusterInfo, InstanceView, MetricsWindow, RequestRecord, Role
from envs import PDClusterEnv
from envs.backends import emulator_factory


class TimedCluster(Cluster):
    """Delegates to a real cluster and accumulates the wall time spent inside it."""

    total_s = 0.0

    def __init__(self, inner: Cluster) -> None:
        self.inner = inner

    @property
    def now(self) -> float:
        return self.inner.now

    @property
    def info(self) -> ClusterInfo:
        return self.inner.info

    @property
    def done(self) -> bool:
        return self.inner.done

    def _timed(self, fn, *args):
        t0 = time.process_time()
        try:
            return fn(*args)
        finally:
            TimedCluster.total_s += time.process_time() - t0

    def instances(self) -> Sequence[InstanceView]:
        return self._timed(self.inner.instances)

    def flip(self, instance_id: int, role: Role) -> None:
        return self._timed(self.inner.flip, instance_id, role)

    def advance(self, dt: float) -> MetricsWindow:
        return self._timed(self.inner.advance, dt)

    def completed(self) -> Sequence[RequestRecord]:
        return self._timed(self.inner.completed)

    def profile(self, instance_id: int):
        return self.inner.profile(instance_id)  # type: ignore[attr-defined]


def timed_factory(workload, config, router, num_prefill, seed):
    t0 = time.process_time()
    cluster = emulator_factory(workload, config, router, num_prefill, seed)
    TimedCluster.total_s += time.process_time() - t0
    return TimedCluster(cluster)


class TimedTeacher:
    """Wraps the teacher controller to time ``act``."""

    total_s = 0.0

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name

    def reset(self, info) -> None:
        self.inner.reset(info)

    def act(self, state):
        t0 = time.process_time()
        try:
            return self.inner.act(state)
        finally:
            TimedTeacher.total_s += time.process_time() - t0


RATE_SCALE = 1.0


def make_env(duration: float, teacher: bool) -> PDClusterEnv:
    env = PDClusterEnv(dict(num_instances=8, preset="h100-llama3.1-8b-tp1", teacher_in_info=teacher,
                            episode={"traces": ["azure-conv"], "duration_s": duration,
                                     "rate_scale": (RATE_SCALE, RATE_SCALE), "drain_s": 30.0}),
                       cluster_factory=timed_factory)
    original = env._make_teacher

    def make_timed_teacher():
        policy = original()
        if policy is not None and policy.controller is not None:
            policy.controller = TimedTeacher(policy.controller)
        return policy

    env._make_teacher = make_timed_teacher  # type: ignore[method-assign]
    return env


def run_env(steps: int, duration: float, teacher: bool, seed: int) -> tuple[float, float, int]:
    env = make_env(duration, teacher)
    rng = np.random.default_rng(seed)
    TimedCluster.total_s = TimedTeacher.total_s = 0.0
    episodes = 0
    t0 = time.process_time()
    w0 = time.perf_counter()
    env.reset(seed=seed)
    for _ in range(steps):
        valid = np.flatnonzero(env.action_masks())
        _, _, term, trunc, _ = env.step(int(valid[rng.integers(valid.size)]))
        if term or trunc:
            episodes += 1
            env.reset()
    cpu = time.process_time() - t0
    return cpu, time.perf_counter() - w0, episodes


def run_bare_emulator(steps: int, duration: float, seed: int) -> float:
    """Baseline: the same kind of episodes advanced by the emulator alone (no env, no flips)."""
    env = PDClusterEnv(dict(num_instances=8, teacher_in_info=False,
                            episode={"traces": ["azure-conv"], "duration_s": duration, "drain_s": 30.0,
                                     "rate_scale": (RATE_SCALE, RATE_SCALE)}))
    env.reset(seed=seed)
    t0 = time.process_time()
    done_steps = 0
    while done_steps < steps:
        env.reset()
        cluster = env.cluster
        end = env._arrival_end_s + env.config.episode.drain_s
        while done_steps < steps and cluster.now < end and not (cluster.now >= env._arrival_end_s and cluster.done):
            cluster.advance(1.0)
            done_steps += 1
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--duration", type=float, default=300.0, help="episode arrival window (s)")
    ap.add_argument("--no-teacher", action="store_true", help="do not compute info['teacher_action']")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate-scale", type=float, default=1.0,
                    help="trace rate multiplier (1.0 = the trace's own load, the issue's setting)")
    args = ap.parse_args()
    global RATE_SCALE
    RATE_SCALE = args.rate_scale

    teacher = not args.no_teacher
    run_env(50, args.duration, teacher, args.seed)  # warm-up: trace load, imports, preset fits
    cpu, wall, episodes = run_env(args.steps, args.duration, teacher, args.seed)
    emu, teach = TimedCluster.total_s, TimedTeacher.total_s
    rest = cpu - emu - teach
    bare = run_bare_emulator(args.steps, args.duration, args.seed)
    sps = args.steps / cpu
    print(f"setting: 8 x h100-llama3.1-8b-tp1, azure-conv at rate scale {RATE_SCALE:g}, {args.duration:g} s windows, "
          f"1 s control interval, random valid actions, teacher_in_info={teacher}")
    print(f"steps: {args.steps}  episodes finished: {episodes}  cpu: {cpu:.2f} s  wall: {wall:.2f} s "
          f"({args.steps / wall:.0f} steps/s wall-clock on this machine now)")
    print(f"time in emulator (advance/instances/flip/completed/construction): {emu:.2f} s ({100 * emu / cpu:.1f}%)")
    print(f"time in Arrow teacher (info['teacher_action']): {teach:.2f} s ({100 * teach / cpu:.1f}%)")
    print(f"time in env (observation, masks, reward, resets): {rest:.2f} s ({100 * rest / cpu:.1f}%)")
    print(f"bare emulator, same number of 1 s advances: {bare:.2f} s ({args.steps / bare:.0f} advances/s); "
          f"env/bare-emulator time ratio: {cpu / bare:.2f}")
    print(f"env_steps_per_second: {sps:.0f}")


if __name__ == "__main__":
    main()
