"""Does ``mixed_policy: cost`` serve more when the disaggregated side pays its handoff?

``MixedConfig.cost_counts_handoff`` adds the KV transfer and the decode instance's first step to
the disaggregated path's predicted TTFT (``arrow_rl.arrow.mixed``). This measures the serving rate
(the suite's per-seed search, its ``--quick`` protocol unless ``--full``) of ``static:P:D:M``
splits on suite scenarios under both settings, common random numbers, and prints one row each.
The decision it backs is recorded in docs/design_mixed_role.md.

    python benchmarks/mixed_cost_handoff.py --scenarios phase-shift-70b-x8,azure-conv-70b-x8 \\
        --specs static:3:1:4,static:2:2:4 --seeds 0
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from arrow_rl.arrow.mixed import MixedConfig
from arrow_rl.evaluation.seeded_search import search_controller
from arrow_rl.evaluation.suite_spec import load_suite


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="standard")
    ap.add_argument("--scenarios", required=True, help="comma list of the suite's scenario names")
    ap.add_argument("--specs", required=True, help="comma list of static:P:D:M controllers")
    ap.add_argument("--seeds", default="0", help="comma list of seeds (default 0)")
    ap.add_argument("--full", action="store_true", help="the suite's full protocol, not --quick")
    args = ap.parse_args()
    suite = load_suite(args.suite, quick=not args.full)
    by_name = {sc.name: sc for sc in suite.scenarios}
    seeds = tuple(int(x) for x in args.seeds.split(","))
    print(f"{'scenario':32} {'controller':14} {'handoff':8} {'req/s per seed':28} {'mixed share':>11} {'sims':>5} {'wall s':>7}")
    for name in args.scenarios.split(","):
        sc = by_name[name]
        proto = dataclasses.replace(sc.protocol, seeds=seeds)
        for spec in args.specs.split(","):
            for handoff in (False, True):
                cfg = MixedConfig(cost_counts_handoff=handoff)
                t0 = time.perf_counter()
                res = search_controller(sc.source, sc.emulator_config, spec, proto, mixed_config=cfg)
                share = _mixed_share(sc, spec, cfg, res[0].factor, seeds[0])
                rates = ", ".join(f"{r.rate:.3g}" for r in res)
                print(f"{name:32} {spec:14} {str(handoff):8} {rates:28} {share:11.2f} "
                      f"{sum(r.simulations for r in res):5d} {time.perf_counter() - t0:7.1f}", flush=True)


def _mixed_share(sc, spec: str, cfg: MixedConfig, factor: float, seed: int) -> float:
    """Share of requests the dispatcher sent MIXED in one run at the found rate factor."""
    from arrow_rl.controllers.registry import make_policy
    from arrow_rl.evaluation.protocol import build_load
    from arrow_rl.evaluation.runner import run_policy

    if factor <= 0:
        return float("nan")
    load = build_load(sc.source, factor, seed, sc.protocol)
    policy = make_policy(spec, int(sc.emulator_config.num_instances), mixed_config=cfg)
    run_policy(load.workload, sc.emulator_config, policy, seed=seed, count_from_s=load.count_from_s)
    return policy.router.sent_mixed / max(1, len(load.workload))


if __name__ == "__main__":
    main()
