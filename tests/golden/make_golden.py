"""The emulator's golden set: small runs whose every output is pinned bit for bit.

Each case builds a cluster, drives it (fixed windows with scripted flips, ``run_until_done``, clones
that diverge), and digests everything a caller can observe: every request record, every
``MetricsWindow``, the router views after each window, and the run's counters. Floats enter the
digests through ``repr`` (shortest round-trip form), so any change of any bit changes the digest.
``tests/test_emulator_golden.py`` re-runs the cases and compares with ``emulator_golden.json``.

Speed work on the emulator must leave these digests unchanged. Regenerate the file only for an
intended change of the emulator's behaviour, in its own commit that says why:

    python tests/golden/make_golden.py            # rewrite tests/golden/emulator_golden.json
    python tests/golden/make_golden.py --check    # compare only (what the test does)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np

from arrow_rl.cluster.base import Role
from arrow_rl.cluster.emulator import EmulatedCluster, EmulatorConfig
from arrow_rl.perf.presets import get_preset
from arrow_rl.workload import load_workload
from arrow_rl.workload.workload import Workload

PRESET = "h100-llama3.1-8b-tp1"
GOLDEN = Path(__file__).with_name("emulator_golden.json")


# ---------------------------------------------------------------------------------------- digests
class _Digest:
    """sha256 over ``repr`` lines, plus a few plain numbers for readable diffs."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def add(self, obj) -> None:
        self.h.update(repr(obj).encode())
        self.h.update(b"\n")

    def hex(self) -> str:
        return self.h.hexdigest()[:32]


def _record_tuple(r):
    return tuple(sorted(r.__dict__.items())) if hasattr(r, "__dict__") else repr(r)


def _window_repr(w) -> str:
    # values in field order, not field names: renaming a field is not a change of behaviour
    return repr(dataclasses.astuple(w))


class Recorder:
    """Digests of one case: windows (+ views after each), records, counters."""

    def __init__(self) -> None:
        self.windows = _Digest()
        self.views = _Digest()
        self.num_windows = 0

    def window(self, cluster: EmulatedCluster, w) -> None:
        self.windows.add(_window_repr(w))
        self.views.add(list(cluster.instances()))
        self.num_windows += 1

    def result(self, cluster: EmulatedCluster) -> dict:
        recs = cluster.records()
        rd = _Digest()
        for r in recs:
            rd.add(_record_tuple(r))
        order = _Digest()
        order.add([r.request_id for r in cluster.completed()])
        fin = [r for r in recs if r.finished]
        ttft = [r.first_token_s - r.arrival_s for r in fin]
        return {
            "records": rd.hex(),
            "end_order": order.hex(),
            "windows": self.windows.hex(),
            "views": self.views.hex(),
            "num_windows": self.num_windows,
            "num_requests": len(recs),
            "finished": len(fin),
            "rejected": sum(1 for r in recs if r.rejected),
            "preemptions": cluster.num_preemptions,
            "transfers": cluster.num_transfers,
            "lease_expiries": cluster.num_lease_expiries,
            "flips": len(cluster.flips),
            "prefix_hit_tokens": cluster.prefix_hit_tokens,
            "now": repr(cluster.now),
            "ttft_sum": repr(math.fsum(ttft)),
            "finish_sum": repr(math.fsum(r.finish_s for r in fin)),
        }


# ---------------------------------------------------------------------------------------- helpers
class Fixed:
    """Prefill legs to ``p`` (or by request id modulo), decode legs to ``d`` (or the other one)."""

    name = "fixed"

    def __init__(self, p=None, d=None, n=2):
        self.p, self.d, self.n = p, d, n

    def reset(self, n):
        pass

    def route_prefill(self, request, ctx):
        return request.request_id % self.n if self.p is None else self.p

    def route_decode(self, request, prefill_instance, ctx):
        return (prefill_instance + 1) % self.n if self.d is None else self.d


def _azure(start: float, end: float, scale: float = 1.0) -> Workload:
    w = load_workload("azure-conv").window(start, end)
    return w.scaled(scale) if scale != 1.0 else w


def _small(blocks: int):
    return dataclasses.replace(get_preset(PRESET), kv_capacity_tokens=16 * blocks)


def _cluster(workload, router=None, preset=None, **kw) -> EmulatedCluster:
    base = dict(preset=PRESET, num_instances=4, mode="disaggregated")
    base.update(kw)
    if router is None:
        from arrow_rl.routing import make_router
        router = make_router("least-loaded")
    return EmulatedCluster(workload, EmulatorConfig(**base), router=router, preset=preset)


def drive(cluster: EmulatedCluster, rec: Recorder, dt: float, flips=(), max_steps: int = 100_000) -> None:
    """Advance by ``dt`` until every request ended, flipping ``(step, instance, role)`` after a step."""
    step = 0
    while not cluster.done:
        w = cluster.advance(dt)
        for when, inst, role in flips:
            if when == step:
                cluster.flip(inst, role)
        rec.window(cluster, w)
        step += 1
        assert step < max_steps


def windowed(cluster: EmulatedCluster, dt: float = 1.0, flips=()) -> dict:
    rec = Recorder()
    drive(cluster, rec, dt, flips)
    return rec.result(cluster)


# ---------------------------------------------------------------------------------------- cases
def case_disaggregated():
    return windowed(_cluster(_azure(0, 90, 3.0), slo_ttft_s=1.0, slo_tpot_s=0.05))


def case_colocated():
    return windowed(_cluster(_azure(0, 90, 3.0), mode="colocated", slo_ttft_s=1.0, slo_tpot_s=0.05))


def case_exact_stepping():
    return windowed(_cluster(_azure(0, 40, 3.0), exact_stepping=True), dt=0.7)


def case_mixed():
    from arrow_rl.arrow.mixed import MixedDispatcher
    from arrow_rl.routing import make_router

    r = MixedDispatcher(make_router("least-loaded"))
    c = _cluster(_azure(0, 60, 3.0), router=r, num_prefill=1, num_mixed=1, slo_ttft_s=1.0, slo_tpot_s=0.05)
    flips = [(4, 1, Role.MIXED), (9, 3, Role.PREFILL), (14, 1, Role.DECODE), (17, 2, Role.MIXED)]
    return windowed(c, 1.0, flips)


def case_flips_with_delay():
    c = _cluster(_azure(0, 60, 4.0), num_prefill=2, flip_delay_s=0.8, slo_ttft_s=1.0, slo_tpot_s=0.05)
    flips = [(5, 0, Role.DECODE), (9, 2, Role.PREFILL), (20, 1, Role.DECODE), (21, 0, Role.PREFILL),
             (33, 3, Role.PREFILL), (34, 1, Role.PREFILL), (50, 2, Role.DECODE)]
    return windowed(c, 0.5, flips)


def case_arrow_router():
    from arrow_rl.routing import make_router

    c = _cluster(_azure(0, 60, 12.0), router=make_router("arrow"), flip_delay_s=0.3, num_prefill=1,
                 slo_ttft_s=1.0, slo_tpot_s=0.05)
    return windowed(c, 1.0)


def _grouped(n: int, seed: int) -> Workload:
    rng = np.random.default_rng(seed)
    arr = np.cumsum(rng.exponential(0.05, n))
    inp = rng.integers(200, 2500, n)
    out = rng.integers(1, 300, n)
    groups = rng.integers(-1, 6, n)
    w = Workload(arr, inp, out)
    return w.with_shared_prefixes(groups, rng.integers(16, 1500, n).clip(max=inp))


def case_prefix_pressure_colocated():
    c = _cluster(_grouped(300, 1), preset=_small(700), mode="colocated", num_instances=3,
                 router=Fixed(None, None, 3))
    return windowed(c, 0.5)


def case_prefix_pressure_disaggregated():
    c = _cluster(_grouped(300, 2), preset=_small(900), num_instances=4, max_num_seqs=32)
    return windowed(c, 0.5, [(12, 1, Role.DECODE), (30, 2, Role.PREFILL)])


def case_preemptions():
    c = _cluster(_azure(0, 60, 3.0), preset=_small(1500), max_num_batched_tokens=2048, max_num_seqs=64)
    return windowed(c, 1.0)


def case_lease_expiries():
    rng = np.random.default_rng(3)
    n = 80
    w = Workload(np.cumsum(rng.exponential(0.08, n)), rng.integers(300, 1600, n), rng.integers(5, 120, n))
    c = _cluster(w, preset=_small(260), num_instances=2, router=Fixed(None, None, 2), kv_lease_timeout_s=2.0)
    return windowed(c, 0.25)


def case_link_sharing_fan_in():
    rng = np.random.default_rng(4)
    n = 120
    w = Workload(np.cumsum(rng.exponential(0.01, n)), rng.integers(1000, 6000, n), rng.integers(2, 50, n))
    c = _cluster(w, num_instances=6, num_prefill=5, router=Fixed(None, 5, 5))
    return windowed(c, 0.2)


def case_client_timeout_and_rejections():
    rng = np.random.default_rng(5)
    n = 150
    inp = rng.integers(100, 4000, n)
    inp[[7, 60]] = 200_000                       # longer than max_model_len: rejected at arrival
    w = Workload(np.cumsum(rng.exponential(0.01, n)), inp, rng.integers(1, 400, n))
    c = _cluster(w, num_instances=2, mode="colocated", client_timeout_s=1.5, max_num_seqs=16,
                 router=Fixed(None, None, 2))
    return windowed(c, 0.3)


def case_run_until_done():
    from arrow_rl.routing import make_router

    c = _cluster(_azure(0, 120, 2.0), router=make_router("round-robin"), num_prefill=1)
    seen = []
    c.run_until_done(progress=seen.append)
    out = Recorder().result(c)
    out["progress_calls"] = len(seen)
    return out


def case_clone():
    """A running cluster is cloned mid-run; the clone and the original diverge (different flips)
    and each must end exactly as a fresh run with the same history would."""
    c = _cluster(_azure(0, 60, 4.0), flip_delay_s=0.2, slo_ttft_s=1.0, slo_tpot_s=0.05)
    rec = Recorder()
    for _ in range(20):
        rec.window(c, c.advance(1.0))
    twin = c.clone()
    twin.flip(0, Role.DECODE)
    rec_twin = Recorder()
    drive(twin, rec_twin, 1.0)
    drive(c, rec, 1.0, [(3, 3, Role.PREFILL)])
    # a clone of a clone, from a later point
    again = twin.clone()
    out = {"original": rec.result(c), "twin": rec_twin.result(twin), "twin_clone": Recorder().result(again)}
    return out


CASES = {name[5:]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


def _hour(mode: str) -> dict:
    from arrow_rl.routing import make_router

    c = _cluster(load_workload("azure-conv"), router=make_router("least-loaded"), num_instances=8, mode=mode,
                 num_prefill=4 if mode == "disaggregated" else None)
    c.run_until_done()
    return Recorder().result(c)


# the one-hour Azure conversation trace on 8 instances (``arrow-rl simulate``'s benchmark): a few
# seconds each, so in the slow tier
SLOW_CASES = {"hour_4p4d": lambda: _hour("disaggregated"), "hour_colocated": lambda: _hour("colocated")}
ALL_CASES = {**CASES, **SLOW_CASES}


def run_all(names=None) -> dict:
    return {name: ALL_CASES[name]() for name in (names or ALL_CASES)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed file, write nothing")
    ap.add_argument("cases", nargs="*", help="only these cases (default all)")
    args = ap.parse_args()
    import time
    t0 = time.process_time()
    got = run_all(args.cases or None)
    print(f"{len(got)} cases in {time.process_time() - t0:.2f} s CPU", file=sys.stderr)
    if args.check:
        want = json.loads(GOLDEN.read_text())
        bad = [k for k in got if got[k] != want.get(k)]
        for k in bad:
            print(f"MISMATCH {k}:\n  want {want.get(k)}\n  got  {got[k]}")
        return 1 if bad else 0
    if args.cases:
        want = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        want.update(got)
        got = want
    GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
