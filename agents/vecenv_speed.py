"""Measure DummyVecEnv vs SubprocVecEnv throughput here: ``python -m agents.vecenv_speed``.

Prints environment steps per second for each (kind, n_envs) with random valid actions on the
training env of ``configs/train/maskable_ppo_azure.yaml`` (or ``--config``), and the ratio of each
to DummyVecEnv with the same n_envs. The trainer's default (``vec_env: dummy``) follows from it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def measure(config_path: str, kind: str, n_envs: int, steps: int, seed: int = 0) -> float:
    import torch

    from agents.config import load_config
    from agents.train import build_vec_env

    torch.set_num_threads(1)
    cfg = load_config(config_path, {"n_envs": n_envs, "vec_env": kind, "normalize": False})
    venv = build_vec_env(cfg)
    rng = np.random.default_rng(seed)
    venv.reset()
    n = int(venv.action_space.n)
    done = 0
    t0 = time.perf_counter()
    while done < steps:
        masks = np.stack(venv.env_method("action_masks"))
        actions = np.array([rng.choice(np.flatnonzero(m)) if rng.random() < 0.1 else 0 for m in masks])
        assert actions.max() < n
        venv.step(actions)
        done += n_envs
    elapsed = time.perf_counter() - t0
    venv.close()
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/train/maskable_ppo_azure.yaml")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--n-envs", default="1,2,4")
    args = parser.parse_args()
    for n in [int(x) for x in args.n_envs.split(",")]:
        dummy = measure(args.config, "dummy", n, args.steps)
        print(f"dummy   n_envs={n}: {dummy:8.0f} steps/s")
        if n > 1:
            sub = measure(args.config, "subproc", n, args.steps)
            print(f"subproc n_envs={n}: {sub:8.0f} steps/s  ({sub / dummy:.2f}x dummy)")


if __name__ == "__main__":
    main()
