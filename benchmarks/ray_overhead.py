"""What Ray costs per unit of work here: ``python -m benchmarks.ray_overhead [--cpus 2]``.

Figures for docs/scaling.md, so a user can predict the speed-up of ``--backend ray`` on N machines:

- start: ``ray.init`` of a private local Ray (paid once per command);
- task round trip: submit one empty task and wait for it, one at a time (latency);
- task throughput: 1,000 empty tasks submitted at once (amortised cost per task, all CPUs busy);
- actor call: one method call on a live actor and its reply (what each ``RayVecEnv`` step costs
  per worker, on top of stepping its envs);
- vec env step: SB3 ``DummyVecEnv`` vs ``RayVecEnv`` on the smoke training env, per env step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn, repeat: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def _vec_env_step_ms(kind: str, n_envs: int, envs_per_worker: int, steps: int) -> float:
    from agents.config import load_config
    from agents.train import build_vec_env

    cfg = load_config(ROOT / "configs" / "train" / "smoke.yaml", {"n_envs": n_envs, "vec_env": kind})
    cfg = cfg.model_copy(update={"ray": cfg.ray.model_copy(update={"envs_per_worker": envs_per_worker})})
    venv = build_vec_env(cfg)
    try:
        venv.reset()
        rng = np.random.default_rng(0)
        for _ in range(5):  # warm up (first calls import and allocate)
            venv.step(np.zeros(n_envs, dtype=np.int64))
        t0 = time.perf_counter()
        for _ in range(steps):
            masks = np.array(venv.env_method("action_masks"))
            venv.step(np.array([rng.choice(np.flatnonzero(m)) for m in masks]))
        return (time.perf_counter() - t0) / (steps * n_envs) * 1e3
    finally:
        venv.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=200, help="vec env steps per measurement")
    args = ap.parse_args()

    import ray

    out: dict[str, float] = {}
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    out["ray_init_s"] = time.perf_counter() - t0

    @ray.remote(num_cpus=1)
    def empty() -> None:
        return None

    @ray.remote(num_cpus=1)
    class Echo:
        def ping(self) -> None:
            return None

    ray.get([empty.remote() for _ in range(2 * args.cpus)])  # workers started
    out["task_round_trip_ms"] = _timed(lambda: ray.get(empty.remote()), 200) * 1e3
    t0 = time.perf_counter()
    ray.get([empty.remote() for _ in range(args.tasks)])
    out["task_throughput_ms_per_task"] = (time.perf_counter() - t0) / args.tasks * 1e3
    actor = Echo.remote()
    ray.get(actor.ping.remote())
    out["actor_call_ms"] = _timed(lambda: ray.get(actor.ping.remote()), 500) * 1e3
    ray.kill(actor)
    for kind, n, per in (("dummy", 4, 4), ("ray", 4, 4), ("ray", 4, 2), ("ray", 4, 1)):
        if kind == "ray" and -(-n // per) > args.cpus:
            continue  # more one-CPU workers than CPUs: they could not all start
        key = f"vec_env_{kind}_{n}envs" + (f"_{per}per_worker" if kind == "ray" else "") + "_ms_per_env_step"
        out[key] = _vec_env_step_ms(kind, n, per, args.steps)
    ray.shutdown()
    print(json.dumps({k: round(v, 3) for k, v in out.items()}, indent=2))


if __name__ == "__main__":
    main()
