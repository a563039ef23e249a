"""PDClusterEnv speed: env steps per second with random (valid) actions, and where the time goes.

Setting: an 8-instance cluster (H100, Llama-3.1-8B, TP1) serving the bundled Azure
conversation trace at its own load (rate scale 1.0), one control interval (1 s) per step, random
start windows, episodes of ``--duration`` seconds, one process. The cluster is wrapped in a timing
proxy (it implements the same ``Cluster`` interface), so the report splits wall time into the
emulator (``advance`` + ``instances`` + ``flip`` + ``completed``), the Arrow teacher (computing
``info["teacher_action"]``) and everything else in the env (observation, masks, reward, resets).

Two settings: light load (the trace's own rate) and contested load (``--contested-scale``, 16x by
default: queues, preemptions, NIC sharing). Each is run with today's emulator and with the
reference (the emulator before the speed work, extracted from git history by
``benchmarks/_reference_emulator.py``; without git, today's with ``ARROW_EMULATOR_REFERENCE=1``),
alternating, best of ``--repeat``; the ratio is printed. The bare emulator advancing the same
episodes with no env around it is timed too; ``env/bare-emulator`` is the overhead factor of the env.
Issue targets: >= 5,000 steps per CPU second light, >= 1,500 at 16x.

Times are CPU seconds of this (single-threaded) process (``time.process_time``), i.e. time on one
core, so the figure holds on a shared machine where wall time also counts other people's work;
wall-clock steps per second are printed too.

    python benchmarks/env_speed.py [--steps 3000] [--contested-steps 600] [--duration 300] [--no-teacher]

The last line is ``env_steps_per_second: N`` (light load, today's emulator).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
from typing import Sequence

import numpy as np

from arrow_rl.cluster.base import Cluster, ClusterInfo, InstanceView, MetricsWindow, RequestRecord, Role
from envs import PDClusterEnv
from envs.backends import emulator_config, emulator_factory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference_emulator import load as load_reference  # noqa: E402

# None: today's emulator (the env's own factory); else a reference EmulatedCluster class, or
# "fastpath-off" for today's with its fast paths off
CLUSTER_CLASS = None


def build_cluster(workload, config, router, num_prefill, seed):
    if CLUSTER_CLASS is None:
        return emulator_factory(workload, config, router, num_prefill, seed)
    if CLUSTER_CLASS == "fastpath-off":
        from arrow_rl.cluster.emulator import fastpath

        saved, fastpath.ENABLED = fastpath.ENABLED, False
        try:
            return emulator_factory(workload, config, router, num_prefill, seed)
        finally:
            fastpath.ENABLED = saved
    return CLUSTER_CLASS(workload, emulator_config(config, num_prefill), router=router, seed=seed)


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

    def ended_since(self, start: int) -> Sequence[RequestRecord]:
        return self._timed(self.inner.ended_since, start)

    def first_token_s(self, request_id: int) -> float:
        return self._timed(self.inner.first_token_s, request_id)

    def flip_history(self) -> Sequence[tuple[float, int, Role]]:
        return self._timed(self.inner.flip_history)

    def profile(self, instance_id: int):
        return self.inner.profile(instance_id)  # type: ignore[attr-defined]


def timed_factory(workload, config, router, num_prefill, seed):
    t0 = time.process_time()
    cluster = build_cluster(workload, config, router, num_prefill, seed)
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
                                     "rate_scale": (RATE_SCALE, RATE_SCALE)}), cluster_factory=build_cluster)
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


def measure(steps: int, duration: float, teacher: bool, seed: int, repeat: int) -> dict:
    """Best-of-``repeat`` env and bare-emulator CPU seconds, today's emulator and the reference alternating."""
    global CLUSTER_CLASS
    ref = load_reference()
    impls = {"today": None, "reference": ref.EmulatedCluster if ref is not None else "fastpath-off"}
    best: dict = {}
    for _ in range(repeat):
        for name, cls in impls.items():
            CLUSTER_CLASS = cls
            cpu, wall, episodes = run_env(steps, duration, teacher, seed)
            parts = (TimedCluster.total_s, TimedTeacher.total_s)
            bare = run_bare_emulator(steps, duration, seed)
            old = best.get(name)
            if old is None or cpu < old["cpu"]:
                best[name] = dict(cpu=cpu, wall=wall, episodes=episodes, emu=parts[0], teach=parts[1],
                                  bare=min(bare, old["bare"]) if old else bare)
            else:
                old["bare"] = min(old["bare"], bare)
    CLUSTER_CLASS = None
    best["reference_label"] = ("emulator before the speed work (git history)" if ref is not None
                               else "this emulator with ARROW_EMULATOR_REFERENCE=1")
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3000, help="env steps per run at light load")
    ap.add_argument("--contested-steps", type=int, default=600, help="env steps per run at contested load (0: skip)")
    ap.add_argument("--duration", type=float, default=300.0, help="episode arrival window (s)")
    ap.add_argument("--no-teacher", action="store_true", help="do not compute info['teacher_action']")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate-scale", type=float, default=1.0,
                    help="light-load trace rate multiplier (1.0 = the trace's own load, the issue's setting)")
    ap.add_argument("--contested-scale", type=float, default=16.0, help="contested-load trace rate multiplier")
    ap.add_argument("--repeat", type=int, default=2, help="runs per setting and emulator (best CPU time kept)")
    args = ap.parse_args()
    global RATE_SCALE

    teacher = not args.no_teacher
    settings = [("light", args.rate_scale, args.steps)]
    if args.contested_steps > 0:
        settings.append(("contested", args.contested_scale, args.contested_steps))
    RATE_SCALE = args.rate_scale
    run_env(50, args.duration, teacher, args.seed)  # warm-up: trace load, imports, preset fits
    print(f"setting: 8 x h100-llama3.1-8b-tp1, azure-conv, {args.duration:g} s windows, 1 s control interval, "
          f"random valid actions, teacher_in_info={teacher}; CPU seconds, best of {args.repeat}")
    light_sps = None
    for label, scale, steps in settings:
        RATE_SCALE = scale
        la = os.getloadavg()[0]
        best = measure(steps, args.duration, teacher, args.seed, args.repeat)
        new, ref = best["today"], best["reference"]
        cpu, emu, teach = new["cpu"], new["emu"], new["teach"]
        rest = cpu - emu - teach
        sps = steps / cpu
        if light_sps is None:
            light_sps = sps
        print(f"\n{label} load (rate scale {scale:g}), {steps} steps, load average {la:.2f} -> {os.getloadavg()[0]:.2f}")
        print(f"  today's emulator: {sps:7,.0f} env steps per CPU second ({cpu:.2f} s CPU, {new['wall']:.2f} s wall, "
              f"{new['episodes']} episodes finished)")
        print(f"  reference ({best['reference_label']}): {steps / ref['cpu']:7,.0f} env steps per CPU second "
              f"({ref['cpu']:.2f} s CPU) -> {ref['cpu'] / cpu:.2f}x")
        print(f"  time in emulator (advance/instances/flip/completed/construction): {emu:.2f} s ({100 * emu / cpu:.1f}%)"
              f" vs reference {ref['emu']:.2f} s -> {ref['emu'] / emu:.2f}x")
        print(f"  time in Arrow teacher (info['teacher_action']): {teach:.2f} s ({100 * teach / cpu:.1f}%)")
        print(f"  time in env (observation, masks, reward, resets): {rest:.2f} s ({100 * rest / cpu:.1f}%)")
        print(f"  bare emulator, same number of 1 s advances: {new['bare']:.2f} s ({steps / new['bare']:,.0f} advances/s)"
              f" vs reference {ref['bare']:.2f} s -> {ref['bare'] / new['bare']:.2f}x; env/bare-emulator time ratio: "
              f"{cpu / new['bare']:.2f}")
    print(f"env_steps_per_second: {light_sps:.0f}")


if __name__ == "__main__":
    main()
