"""A run that cannot reach the target attainment stops early, and the search's pass/fail is unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arrow_rl.cluster.base import SLO
from arrow_rl.cluster.emulator import EmulatorConfig
from arrow_rl.controllers.registry import make_policy
from arrow_rl.evaluation.runner import CertainMisses, build_cluster, meets_slo, run_policy, slo_of
from arrow_rl.evaluation.crossing import TARGET_ATTAINMENT
from arrow_rl.workload.workload import Workload

EMU = EmulatorConfig(preset="h100-llama3.1-8b-tp1", num_instances=4, slo_ttft_s=1.0, slo_tpot_s=0.03)


def load(rate: float, seed: int, n: int = 400) -> Workload:
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / rate, n))
    return Workload(arrival - arrival[0], rng.integers(200, 6000, n), rng.integers(1, 400, n), name="w")


@pytest.mark.parametrize("rate", [2.0, 8.0, 30.0, 120.0])
@pytest.mark.parametrize("spec", ["static:1", "static:2", "arrow"])
def test_stopping_early_never_changes_pass_or_fail(rate, spec):
    w = load(rate, seed=int(rate))
    full = run_policy(w, EMU, make_policy(spec, 4), count_from_s=5.0)
    early = run_policy(w, EMU, make_policy(spec, 4), count_from_s=5.0, stop_below=TARGET_ATTAINMENT)
    assert (full.attainment >= TARGET_ATTAINMENT) == (early.attainment >= TARGET_ATTAINMENT)
    if full.attainment >= TARGET_ATTAINMENT:
        assert not early.stopped_early and early.attainment == full.attainment
        assert early.records == full.records
    else:
        assert early.attainment >= full.attainment - 1e-12          # an upper bound
        assert early.ttft_attainment >= full.ttft_attainment - 1e-12
        assert early.tpot_attainment >= full.tpot_attainment - 1e-12
        if early.stopped_early:
            assert early.sim_end_s <= full.sim_end_s


def test_an_overloaded_run_stops_long_before_its_end():
    w = load(200.0, seed=1, n=3000)
    early = run_policy(w, EMU, make_policy("static:2", 4), stop_below=TARGET_ATTAINMENT)
    full = run_policy(w, EMU, make_policy("static:2", 4))
    assert full.attainment < 0.5
    assert early.stopped_early and early.sim_end_s < 0.3 * full.sim_end_s


def test_certain_misses_never_exceed_the_misses_the_run_ends_with():
    """At every control interval, the requests called certain misses do miss at the end."""
    slo = slo_of(EMU)
    for seed, rate in ((0, 10.0), (1, 40.0), (2, 90.0)):
        w = load(rate, seed)
        cluster = build_cluster(w, EMU, make_policy("static:2", 4), seed)
        tracker = CertainMisses(w, slo, count_from_s=3.0, target=TARGET_ATTAINMENT)
        seen = []
        while not cluster.done and cluster.now < 400:
            cluster.advance(0.5)
            seen.append(tracker.update(cluster))
        records = {r.request_id: r for r in cluster.records()}
        actual = sum(1 for rid in range(tracker.first, len(w)) if not meets_slo(records[rid], slo))
        assert seen == sorted(seen)          # misses only accumulate
        assert seen[-1] <= actual
        assert max(seen) > 0 or actual == 0


def test_meets_slo_counts_a_one_token_answer_by_its_ttft():
    from arrow_rl.cluster.emulator.requests import make_record

    ok = make_record(request_id=0, arrival_s=0.0, input_tokens=10, output_tokens=1, prefill_instance=0,
                     decode_instance=0, first_token_s=0.5, finish_s=0.5, prefill_done_s=0.5, cached_tokens=0,
                     rejected=False, reject_reason="", preemptions=0)
    assert math.isnan(ok.tpot_s) and meets_slo(ok, SLO(1.0, 0.01))
    assert not meets_slo(ok, SLO(0.4, 0.01))
