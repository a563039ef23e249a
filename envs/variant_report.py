"""Attainment of simple policies on the registered variants.

Why: a variant is only useful for learning if its load is contested: the prefill/decode split
must matter, and the Arrow heuristic must leave room above it. Two reports:

- the default one prints, for every variant, the mean SLO attainment of the static initial split
  (always no-op) and of the Arrow interval controller (always ``info["teacher_action"]``) at the
  low end, geometric middle and high end of its rate-scale range;
- ``--baselines ID`` prints the mean attainment of a random policy (uniform over the valid
  actions), the no-op policy and Arrow on the env's own episodes (reset seeds 0..n-1, rate scale
  drawn as in training), which is what a newcomer's agent is compared against.

    python -m envs.variant_report [--seeds 2]
    python -m envs.variant_report --baselines arrow_rl/PDCluster-v0 --seeds 3
"""

from __future__ import annotations

import argparse
from typing import Any

import gymnasium
import numpy as np

import envs

POLICIES = ("random", "noop", "arrow")


def episode_attainment(env_id: str, seed: int, rate_scale: float | None, policy: str, **overrides: Any) -> float:
    """SLO attainment of one episode (reset seed ``seed``) under ``policy``: ``random`` (uniform over
    the valid actions, its own RNG seeded with ``seed``), ``noop``/``static`` (always action 0) or
    ``arrow`` (always the Arrow interval controller's ``info["teacher_action"]``). ``rate_scale``
    None: drawn by the env as in training."""
    env = gymnasium.make(env_id, **overrides)
    rng = np.random.default_rng(seed)
    try:
        options = {} if rate_scale is None else {"rate_scale": rate_scale}
        _, info = env.reset(seed=seed, options=options)
        while True:
            if policy == "random":
                action = int(rng.choice(np.flatnonzero(info["action_mask"])))
            elif policy in ("noop", "static"):
                action = 0
            elif policy == "arrow":
                action = int(info["teacher_action"])
            else:
                raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
            _, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                return float(info["slo_attainment"])
    finally:
        env.close()


def baselines(env_id: str, seeds: int, **overrides: Any) -> dict[str, float]:
    """Mean attainment of each of ``POLICIES`` over reset seeds 0..seeds-1 (rate scale drawn)."""
    return {p: float(np.mean([episode_attainment(env_id, s, None, p, **overrides) for s in range(seeds)]))
            for p in POLICIES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=2, help="episodes (reset seeds 0..n-1) per point")
    ap.add_argument("--baselines", metavar="ENV_ID", default=None,
                    help="print random / no-op / Arrow mean attainment on this env's own episodes instead")
    args = ap.parse_args()
    if args.baselines is not None:
        row = baselines(args.baselines, args.seeds)
        print(f"| id | seeds | random | no-op | Arrow |\n|---|---|---|---|---|\n| `{args.baselines}` | "
              f"0-{args.seeds - 1} | {row['random']:.3f} | {row['noop']:.3f} | {row['arrow']:.3f} |")
        return
    print("| id | rate scale | static 4P4D | Arrow interval |\n|---|---|---|---|")
    for env_id, cfg in envs.VARIANTS.items():
        if env_id == "arrow_rl/PDCluster-v0":  # its default is reported by --baselines
            continue
        lo, hi = cfg["episode"]["rate_scale"]
        for scale in (lo, (lo * hi) ** 0.5, hi):
            row = [np.mean([episode_attainment(env_id, s, scale, pol) for s in range(args.seeds)])
                   for pol in ("static", "arrow")]
            print(f"| `{env_id}` | {scale:.2f} | {row[0]:.3f} | {row[1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
