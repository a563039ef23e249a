"""Attainment of simple policies on each registered variant, across its rate-scale range.

Why: a variant is only useful for learning if its load range straddles the point where the
prefill/decode split starts to matter. This prints, for every variant, the mean SLO attainment of
the static initial split (always no-op) and of the Arrow interval controller (always
``info["teacher_action"]``) at the low end, geometric middle and high end of the range.

    python -m envs.variant_report [--seeds 2]
"""

from __future__ import annotations

import argparse

import gymnasium
import numpy as np

import envs


def episode_attainment(env_id: str, seed: int, rate_scale: float, policy: str) -> float:
    env = gymnasium.make(env_id)
    _, info = env.reset(seed=seed, options={"rate_scale": rate_scale})
    while True:
        action = 0 if policy == "static" else info["teacher_action"]
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return float(info["slo_attainment"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=2, help="episodes (reset seeds 0..n-1) per point")
    args = ap.parse_args()
    print("| id | rate scale | static 4P4D | Arrow interval |\n|---|---|---|---|")
    for env_id, cfg in envs.VARIANTS.items():
        if env_id == "arrow_rl/PDCluster-v0":  # same config as AzureConv
            continue
        lo, hi = cfg["episode"]["rate_scale"]
        for scale in (lo, (lo * hi) ** 0.5, hi):
            row = [np.mean([episode_attainment(env_id, s, scale, pol) for s in range(args.seeds)])
                   for pol in ("static", "arrow")]
            print(f"| `{env_id}` | {scale:.2f} | {row[0]:.3f} | {row[1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
