"""Cost of a labelled decision: clone a running cluster and simulate every candidate over its horizon.

The ``oracle`` controller (arrow_rl/controllers/baselines.py) and the env's lookahead teachers
(envs/move_teacher.py, envs/split_teacher.py) decide by cloning the emulator and running each
candidate split open loop. This times, on 8 x H100 8B serving the Azure conversation trace with the
oracle policy's router (Arrow's Algorithm 1 behind the MIXED dispatcher), stopped at ``--at`` s:

- ``clone()`` alone, against re-simulating the cluster from t = 0 to the same point (what a planner
  without clones would pay per candidate);
- one oracle decision (``OracleController.act`` with its defaults: the current split and +-1..2
  prefill instances, 30 s of lookahead each);
- one teacher decision (13 candidates x 15 s of lookahead, ``WhatIfPlanner.score``,
  the ``oracle-moves`` teacher's defaults);

each with today's emulator and with the reference (the emulator before the speed work, extracted
from git history by ``benchmarks/_reference_emulator.py``), in alternating rounds in this process,
the best of ``--repeat`` rounds for each figure, at light load (rate scale 1) and contested load
(``--contested-scale``). CPU seconds
(``time.process_time``); the load average is printed. Issue target: an oracle decision 5x cheaper.

    python benchmarks/oracle_speed.py [--at 600] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _reference_emulator import load as load_reference  # noqa: E402

from arrow_rl.cluster.emulator import EmulatedCluster, EmulatorConfig  # noqa: E402
from arrow_rl.control import ControlState  # noqa: E402
from arrow_rl.controllers.registry import make_policy  # noqa: E402
from arrow_rl.workload import load_workload  # noqa: E402
from arrow_rl.controllers.whatif import RECORDED_FUTURE, WhatIfPlanner  # noqa: E402

PRESET = "h100-llama3.1-8b-tp1"
N = 8


def build(cls, workload, at: float):
    """A cluster of ``cls`` with the oracle policy, advanced to ``at`` s in 1 s windows; and its oracle."""
    policy = make_policy("oracle", N)
    cfg = EmulatorConfig(preset=PRESET, num_instances=N, mode="disaggregated", num_prefill=policy.initial_prefill,
                         slo_ttft_s=2.0, slo_tpot_s=0.1)
    c0 = time.process_time()
    cluster = cls(workload, cfg, router=policy.router, seed=0)
    window = None
    while cluster.now < at - 1e-9:
        window = cluster.advance(1.0)
    resim = time.process_time() - c0
    oracle = policy.controller
    oracle.bind_cluster(cluster)
    oracle.reset(cluster.info)
    return cluster, oracle, window, resim


def time_decisions(cls, workload, at: float) -> dict:
    """One round: build (re-simulate to ``at``), clone, one oracle decision, one teacher decision."""
    cluster, oracle, window, resim = build(cls, workload, at)
    views = cluster.instances()
    state = ControlState(now=cluster.now, window=window, instances=views)
    n_clone = 20
    c0 = time.process_time()
    for _ in range(n_clone):
        cluster.clone()
    clone = (time.process_time() - c0) / n_clone
    cands = [oracle.flips_to(views, p) for p in oracle.candidates(sum(v.role.value == "prefill" for v in views), N)]
    oracle._last_decision_s = -float("inf")
    c0 = time.process_time()
    flips = oracle.act(state)
    decision = time.process_time() - c0
    teacher_planner = WhatIfPlanner(horizon_s=15.0, violation_weight=1.0)
    c0 = time.process_time()
    for k in range(13):
        teacher_planner.score(cluster, cands[k % len(cands)], RECORDED_FUTURE)
    teacher = time.process_time() - c0
    return dict(resim=resim, clone=clone, oracle=decision, teacher=teacher, evaluations=oracle.evaluations,
                flips=len(flips))


def best_of(impls: dict, workload, at: float, repeat: int) -> dict:
    """Per implementation, the best of ``repeat`` rounds for each figure; rounds alternate."""
    best: dict = {}
    for _ in range(repeat):
        for name, cls in impls.items():
            r = time_decisions(cls, workload, at)
            b = best.setdefault(name, r)
            for key in ("resim", "clone", "oracle", "teacher"):
                b[key] = min(b[key], r[key])
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--at", type=float, default=600.0, help="cluster time (s) at which the decision is taken")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--contested-scale", type=float, default=4.0, help="rate scale of the contested setting (0: skip)")
    args = ap.parse_args()
    trace = load_workload("azure-conv")
    ref = load_reference()
    ref_cls = ref.EmulatedCluster if ref is not None else None
    print(f"8 x {PRESET}, azure-conv, oracle policy (Arrow Alg. 1 router + MIXED dispatcher), decision at t = {args.at:g} s; "
          f"CPU seconds, best of {args.repeat}; reference: "
          + ("the emulator before the speed work (git history)" if ref_cls else "none (git history unavailable)"))
    for label, scale in (("light", 1.0), ("contested", args.contested_scale)):
        if scale <= 0:
            continue
        wl = trace.scaled(scale) if scale != 1.0 else trace
        la = os.getloadavg()[0]
        impls = {"new": EmulatedCluster, **({"ref": ref_cls} if ref_cls else {})}
        best = best_of(impls, wl, args.at, args.repeat)
        new, old = best["new"], best.get("ref")
        print(f"\n{label} load (rate scale {scale:g}), load average {la:.2f} -> {os.getloadavg()[0]:.2f}")

        def line(name: str, key: str, unit: float = 1.0, suffix: str = "s") -> None:
            ratio = f" vs reference {old[key] * unit:8.3f} {suffix} -> {old[key] / new[key]:4.2f}x" if old else ""
            print(f"  {name:<46} {new[key] * unit:8.3f} {suffix}{ratio}")

        line(f"re-simulate from 0 to {args.at:g} s (1 s windows)", "resim")
        line("clone() of the running cluster", "clone", 1e3, "ms")
        print(f"  {'':<46} clone is {new['resim'] / new['clone']:,.0f}x cheaper than re-simulating")
        line(f"oracle decision ({new['evaluations']} candidates x 30 s)", "oracle")
        line("teacher decision (13 candidates x 15 s)", "teacher")


if __name__ == "__main__":
    main()
