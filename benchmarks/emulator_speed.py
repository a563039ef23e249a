"""Emulator speed on the one-hour Azure conversation trace (19,366 requests) on 8 H100 instances.

Prints, for disaggregated 4P4D and colocated clusters (least-loaded router, what `arrow-rl simulate`
runs), the CPU seconds of the whole trace with today's emulator and with the reference, timed
alternately in this process (best of ``--repeat`` each), and their ratio; with ``--windows``, the
same trace stepped by ``advance(1.0)`` as the RL environment does (a ``MetricsWindow`` per second).

The reference is the emulator before the speed work (``benchmarks/_reference_emulator.py`` extracts
it from git history; the golden set pins that both give bit-identical results), or, without git,
today's emulator with its fast paths off (``ARROW_EMULATOR_REFERENCE=1``). ``--stepping`` adds the
closed-form decode runs vs stepping every iteration (``exact_stepping``) on the first
``--baseline-minutes`` of the trace.

``--against REV`` takes the reference from another git revision instead (e.g. the commit a change
starts from): the ratio is then the change's speed-up (below 1: a slowdown), measured in one
process. ``--router NAME`` replays with another router: the least-loaded router is routed from the
instances' running sums (fastpath.py), while e.g. ``arrow-noflip`` and ``round-robin`` read the
router views (views.py). ``--minutes M`` replays only the trace's first ``M`` minutes (a quick check).

Times are CPU seconds of this single-threaded process (``time.process_time``): the wall time of one
idle core, meaningful on a shared, loaded machine (the load average is printed); wall times beside.
Issue targets: 4P4D <= 0.4 s CPU, colocated <= 0.3 s. The last line is
``simulated_requests_per_second: N`` (the slower mode, today's emulator, per CPU second).

    python benchmarks/emulator_speed.py [--repeat 5] [--windows] [--stepping]
    python benchmarks/emulator_speed.py --against 8607ddf --router arrow-noflip --minutes 20 --repeat 3
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
from arrow_rl.cluster.emulator import fastpath  # noqa: E402
from arrow_rl.routing import make_router  # noqa: E402
from arrow_rl.workload import load_workload  # noqa: E402

PRESET = "h100-llama3.1-8b-tp1"


def reference_cluster_class(rev: str | None = None):
    """``(class, label)`` of the reference emulator (module docstring): the one at git revision
    ``rev`` if given (an error if git cannot provide it), else the one before the speed work."""
    if rev is not None:
        ref = load_reference(rev)
        if ref is None:
            raise SystemExit(f"--against {rev}: git cannot provide arrow_rl/cluster/emulator at that revision")
        return ref.EmulatedCluster, f"the emulator at {rev} (git history)"
    ref = load_reference()
    if ref is not None:
        return ref.EmulatedCluster, "emulator before the speed work (git history)"
    return None, "this emulator with ARROW_EMULATOR_REFERENCE=1"


def build(cls, workload, mode: str, exact: bool = False, router: str = "least-loaded"):
    cfg = EmulatorConfig(preset=PRESET, num_instances=8, mode=mode, num_prefill=4 if mode == "disaggregated" else None,
                         exact_stepping=exact)
    if cls is None:   # today's class on its reference path
        saved = fastpath.ENABLED
        fastpath.ENABLED = False
        try:
            return EmulatedCluster(workload, cfg, router=make_router(router))
        finally:
            fastpath.ENABLED = saved
    return cls(workload, cfg, router=make_router(router))


def one_run(cls, workload, mode: str, windows: bool, exact: bool = False, router: str = "least-loaded"):
    cluster = build(cls, workload, mode, exact, router)
    w0, c0 = time.perf_counter(), time.process_time()
    if windows:
        while not cluster.done:
            cluster.advance(1.0)
    else:
        cluster.run_until_done()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    assert cluster.done and len(cluster.completed()) == len(workload)
    return cpu, wall, cluster


def compare(workload, mode: str, repeat: int, windows: bool, ref_cls, router: str) -> tuple[tuple, tuple]:
    """Best (cpu, wall, cluster) of today's emulator and of the reference, runs alternating."""
    best_new = best_ref = (float("inf"), float("inf"), None)
    for _ in range(repeat):
        r = one_run(EmulatedCluster, workload, mode, windows, router=router)
        if r[0] < best_new[0]:
            best_new = r
        r = one_run(ref_cls, workload, mode, windows, router=router)
        if r[0] < best_ref[0]:
            best_ref = r
    same = [(a.request_id, a.first_token_s, a.finish_s) for a in best_new[2].records()] == \
           [(a.request_id, a.first_token_s, a.finish_s) for a in best_ref[2].records()]
    assert same, "today's emulator and the reference disagree"
    return best_new, best_ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per configuration and emulator (best CPU time kept)")
    ap.add_argument("--windows", action="store_true", help="also step the trace by advance(1.0), as the env does")
    ap.add_argument("--stepping", action="store_true", help="also compare with stepping every decode iteration")
    ap.add_argument("--baseline-minutes", type=float, default=10.0,
                    help="trace prefix (minutes) on which --stepping compares")
    ap.add_argument("--against", metavar="REV", help="reference: the emulator at this git revision")
    ap.add_argument("--router", default="least-loaded", help="request router (default least-loaded)")
    ap.add_argument("--minutes", type=float, help="replay only the trace's first MINUTES minutes")
    ap.add_argument("--mode", choices=("disaggregated", "colocated"), help="only this cluster mode (default both)")
    args = ap.parse_args()

    trace = load_workload("azure-conv")
    if args.minutes is not None:
        trace = trace.window(0.0, args.minutes * 60.0)
    ref_cls, ref_label = reference_cluster_class(args.against)
    print(f"trace: azure-conv, {len(trace):,} requests over {trace.duration_s:,.0f} s; preset {PRESET}, 8 instances, "
          f"{args.router} router; load average {os.getloadavg()[0]:.2f}")
    print(f"reference: {ref_label}; best of {args.repeat} alternating runs each, CPU seconds (wall)")
    rates = []
    for mode in (args.mode,) if args.mode else ("disaggregated", "colocated"):
        label = "4P4D disaggregated" if mode == "disaggregated" else "8 colocated"
        for windows in (False, True) if args.windows else (False,):
            (cpu, wall, cluster), (rcpu, rwall, _) = compare(trace, mode, args.repeat, windows, ref_cls, args.router)
            how = "advance(1.0)" if windows else "run_until_done"
            if not windows:
                rates.append(len(trace) / cpu)
            print(f"{label:>20} {how:>14}: {cpu:6.3f} s CPU ({wall:.3f} s wall) vs reference {rcpu:6.3f} s "
                  f"({rwall:.3f} s wall) -> {rcpu / cpu:4.2f}x; {len(trace) / cpu:9,.0f} simulated requests/s, "
                  f"{cluster.num_transfers:,} KV transfers, {cluster.num_preemptions:,} preemptions")
        if args.stepping:
            prefix = trace.window(0.0, args.baseline_minutes * 60.0)
            fast = min(one_run(EmulatedCluster, prefix, mode, False, router=args.router)[0] for _ in range(args.repeat))
            slow = one_run(EmulatedCluster, prefix, mode, False, exact=True, router=args.router)[0]
            print(f"{'':>20}  first {args.baseline_minutes:g} min ({len(prefix):,} requests): closed-form runs "
                  f"{fast:.3f} s CPU vs stepping every iteration {slow:.3f} s -> {slow / fast:5.1f}x faster")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"simulated_requests_per_second: {min(rates):.0f}")


if __name__ == "__main__":
    main()
