"""Imitation labelling speed: plain envs in turn vs a lock-step SubprocVecEnv vs EnvWorkers.

The privileged lookahead teacher (``oracle-moves``) plans inside each env step (13 emulator clones
x 15 s of lookahead per decision), so labelling is most of a generalist run's wall time
(docs/agents.md). ``vec_env: subproc`` runs the labelling envs one per process, each stepping on
its own (``agents.label_workers.EnvWorkers``, what ``agents.train.labelling_envs`` builds). This
times ``agents.imitation.collect`` three ways on the generalist's env
(``configs/train/generalist.yaml``: its episode distribution, 4 to 32 instances) with the teacher
always acting: plain envs stepped in turn in this process (the baseline), an SB3
``SubprocVecEnv`` (one process per env, lock-step: each step waits for the slowest env), and
``EnvWorkers``; and checks that all three give the same labels.

    python benchmarks/labelling_speed.py [--steps 320] [--envs 8]

The last line is ``independent_vs_plain_speedup: N`` (wall time; > 1: faster than one process).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from stable_baselines3.common.vec_env import SubprocVecEnv

from agents.config import load_config
from agents.envs_bridge import env_thunk, make_env
from agents.imitation import collect
from agents.label_workers import EnvWorkers

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=320, help="env steps in total per way (1 in 5 is a decision)")
    ap.add_argument("--envs", type=int, default=8)
    ap.add_argument("--config", default=str(ROOT / "configs/train/generalist.yaml"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    cfg = load_config(a.config)
    kwargs = cfg.env.env_kwargs()

    def teacher(_o, _m, t):
        return t

    def timed(envs) -> tuple[float, object]:
        t0 = time.perf_counter()
        roll = collect(envs, a.steps, teacher, np.random.default_rng(a.seed), beta=1.0, seed=a.seed)
        return time.perf_counter() - t0, roll

    plain_envs = [make_env(cfg.env.id, kwargs) for _ in range(a.envs)]
    plain_s, plain = timed(plain_envs)
    for env in plain_envs:
        env.close()
    thunks = [env_thunk(cfg.env.id, kwargs, monitor=False) for _ in range(a.envs)]
    venv = SubprocVecEnv(thunks, start_method="spawn")
    try:
        venv.reset()   # workers started and warm before the clock runs, as the plain envs were built before it
        lock_s, lock = timed(venv)
    finally:
        venv.close()
    workers = EnvWorkers(thunks)
    try:
        indep_s, indep = timed(workers)
    finally:
        workers.close()

    same = all(np.array_equal(plain.dataset.actions, r.dataset.actions) and np.array_equal(plain.obs, r.obs)
               for r in (lock, indep))
    print(f"{a.steps} env steps, {a.envs} envs ({os.cpu_count()} CPUs), {len(plain.dataset)} labelled decisions")
    for name, sec in (("plain envs in turn", plain_s), ("SubprocVecEnv, lock-step", lock_s),
                      ("EnvWorkers, independent", indep_s)):
        print(f"{name:25s}: {sec:7.1f} s  ({a.steps / sec:5.2f} steps/s, {plain_s / sec:4.2f}x)")
    print(f"same labels and observations all three ways: {same}")
    print(f"independent_vs_plain_speedup: {plain_s / indep_s:.2f}")


if __name__ == "__main__":
    main()
