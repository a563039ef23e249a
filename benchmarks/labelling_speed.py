"""Imitation labelling speed: plain envs stepped in turn vs a SubprocVecEnv, same envs, same seed.

The privileged lookahead teacher (``oracle-moves``) plans inside each env step (13 emulator clones
x 15 s of lookahead per decision), so labelling is most of a generalist run's wall time
(docs/agents.md). ``vec_env: subproc`` runs the labelling envs one per process
(``agents.train.labelling_envs``). This times ``agents.imitation.collect`` both ways on the
generalist's env (``configs/train/generalist.yaml``: its episode distribution, 4 to 32 instances)
with the teacher always acting, and checks that both give the same labels.

    python benchmarks/labelling_speed.py [--steps 200] [--envs 2]

The last line is ``subproc_vs_plain_speedup: N`` (wall time; > 1: parallel labelling is faster).
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

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200, help="env steps in total per way (1 in 5 is a decision)")
    ap.add_argument("--envs", type=int, default=2)
    ap.add_argument("--config", default=str(ROOT / "configs/train/generalist.yaml"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    cfg = load_config(a.config)
    kwargs = cfg.env.env_kwargs()

    def teacher(_o, _m, t):
        return t

    plain_envs = [make_env(cfg.env.id, kwargs) for _ in range(a.envs)]
    t0 = time.perf_counter()
    plain = collect(plain_envs, a.steps, teacher, np.random.default_rng(a.seed), beta=1.0, seed=a.seed)
    plain_s = time.perf_counter() - t0
    for env in plain_envs:
        env.close()

    venv = SubprocVecEnv([env_thunk(cfg.env.id, kwargs, monitor=False) for _ in range(a.envs)], start_method="spawn")
    try:
        venv.reset()   # workers started and warm before the clock runs, as the plain envs were built before it
        t0 = time.perf_counter()
        par = collect(venv, a.steps, teacher, np.random.default_rng(a.seed), beta=1.0, seed=a.seed)
        par_s = time.perf_counter() - t0
    finally:
        venv.close()

    same = np.array_equal(plain.dataset.actions, par.dataset.actions) and np.array_equal(plain.obs, par.obs)
    print(f"{a.steps} env steps, {a.envs} envs ({os.cpu_count()} CPUs), {len(plain.dataset)} labelled decisions")
    print(f"plain envs in turn : {plain_s:7.1f} s  ({a.steps / plain_s:5.2f} steps/s)")
    print(f"SubprocVecEnv      : {par_s:7.1f} s  ({a.steps / par_s:5.2f} steps/s)")
    print(f"same labels and observations both ways: {same}")
    print(f"subproc_vs_plain_speedup: {plain_s / par_s:.2f}")


if __name__ == "__main__":
    main()
