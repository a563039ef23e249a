"""Latency of one ``act`` call: the trained checkpoint controller vs the Arrow interval controller.

A deployed controller runs once per control interval (1 s by default), so one ``act`` must be far
below that; the target is under 1 ms on CPU. Both controllers act on the same recorded sequence
of ``ControlState``s (a PDClusterEnv rollout at a loaded rate), in the same process, one torch
thread. Prints per-call median / mean / p99 and the ratio to Arrow; the last line is
``checkpoint_act_ms: <median>``.

    python benchmarks/controller_latency.py [--checkpoint agents/checkpoints/default] [--calls 3000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def record_states(env_kwargs: dict, n: int, seed: int):
    import gymnasium as gym

    import envs  # noqa: F401

    env = gym.make("arrow_rl/PDCluster-v0", **env_kwargs)
    _, info = env.reset(seed=seed)
    u = env.unwrapped
    states, cluster_info = [], u.cluster.info
    while len(states) < n:
        states.append(u.control_state)
        _, _, terminated, truncated, info = env.step(info["teacher_action"])
        if terminated or truncated:
            _, info = env.reset()
    env.close()
    return states, cluster_info


def time_calls(controller, info, states, calls: int) -> np.ndarray:
    controller.reset(info)
    for s in states[:50]:  # warm up (torch, caches)
        controller.act(s)
    controller.reset(info)
    out = np.empty(calls)
    for i in range(calls):
        s = states[i % len(states)]
        t0 = time.perf_counter()
        controller.act(s)
        out[i] = time.perf_counter() - t0
    return out * 1e3


def main() -> None:
    import torch

    from agents import DEFAULT_CHECKPOINT, load_controller
    from agents.checkpoint import read_metadata

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--states", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    meta = read_metadata(args.checkpoint)
    env_cfg = dict(meta["env_config"])
    states, info = record_states(env_cfg, args.states, args.seed)
    arrow = load_controller(env_cfg.get("teacher", "arrow-interval"), num_instances=info.num_instances)
    ckpt = load_controller(args.checkpoint)
    a = time_calls(arrow, info, states, args.calls)
    c = time_calls(ckpt, info, states, args.calls)
    print(f"{info.num_instances} instances, {meta['observation_space']['shape'][0]} observation features, "
          f"{args.calls} calls each over {len(states)} recorded states")
    for name, x in ((arrow.name, a), (ckpt.name, c)):
        print(f"{name:>24}: median {np.median(x):.3f} ms  mean {x.mean():.3f} ms  p99 {np.percentile(x, 99):.3f} ms")
    print(f"checkpoint / arrow (median): {np.median(c) / np.median(a):.2f}x")
    print(f"checkpoint_act_ms: {np.median(c):.3f}")


if __name__ == "__main__":
    main()
