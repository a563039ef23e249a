"""Baselines (Dynamo-style planner, oracle helpers) and the policy registry."""

from __future__ import annotations

from dataclasses import replace

import pytest

from arrow_rl.cluster.base import SLO, ClusterInfo, Flip, InstanceView, MetricsWindow, Mode, PoolStats, Role
from arrow_rl.control import ControlState
from arrow_rl.arrow import ArrowIntervalController, ArrowMonitor
from arrow_rl.controllers.baselines import DynamoConfig, DynamoPlannerController, NoFlipController, OracleController
from arrow_rl.controllers.registry import expand_spec, make_policy
from arrow_rl.perf.profile import InstanceProfile

PROFILE = InstanceProfile(prefill_a=1e-6, prefill_b=1e-3, prefill_c=0.01, decode_slope=1e-5, decode_intercept=0.025)
SLO_ = SLO(ttft_s=2.0, tpot_s=0.125)  # MT = 10_000 tokens
INFO = ClusterInfo(num_instances=4, preset="test", slo=SLO_, mode=Mode.DISAGGREGATED,
                   initial_roles=(Role.PREFILL,) * 2 + (Role.DECODE,) * 2, extra={"profiles": PROFILE})


def view(i, role, prefill=(), decode_tokens=0):
    return InstanceView(i, role, len(prefill), sum(prefill), float(sum(p * p for p in prefill)),
                        1 if decode_tokens else 0, decode_tokens, 0, 100_000)


def state(views, now=5.0, isl=500.0):
    w = MetricsWindow(start_s=now - 1, end_s=now, prefill=PoolStats(), decode=PoolStats(), instances=(),
                      arrivals=3, arrival_input_tokens_mean=isl)
    return ControlState(now=now, window=w, instances=views)


def dynamo():
    c = DynamoPlannerController()
    c.reset(INFO)
    return c


# ------------------------------------------------------------------ Dynamo planner ------------
def test_dynamo_scales_prefill_up_when_all_prefill_workers_over_ttft_target():
    views = [view(0, Role.PREFILL, [1500, 1000]), view(1, Role.PREFILL, [1500, 1000]),
             view(2, Role.DECODE, decode_tokens=3000), view(3, Role.DECODE, decode_tokens=100)]
    assert dynamo().act(state(views)) == [Flip(3, Role.PREFILL)]


def test_dynamo_does_not_scale_when_only_some_workers_are_over():
    views = [view(0, Role.PREFILL, [1500, 1000]), view(1, Role.PREFILL),
             view(2, Role.DECODE, decode_tokens=6000), view(3, Role.DECODE, decode_tokens=6000)]
    assert dynamo().act(state(views)) == []


def test_dynamo_scales_decode_up_when_all_decode_workers_over_itl_target():
    views = [view(0, Role.PREFILL, [100]), view(1, Role.PREFILL, [100]),
             view(2, Role.DECODE, decode_tokens=12_000), view(3, Role.DECODE, decode_tokens=11_000)]
    assert dynamo().act(state(views)) == [Flip(0, Role.DECODE)]


def test_dynamo_idle_pool_lends_a_worker_below_80pct_boundary():
    # Prefill: all below target·(n−1)/n·0.8 → −1; decode: neutral (one busy worker) → 0 → flip P→D.
    views = [view(0, Role.PREFILL), view(1, Role.PREFILL), view(2, Role.DECODE, decode_tokens=6000),
             view(3, Role.DECODE, decode_tokens=100)]
    assert dynamo().act(state(views)) == [Flip(0, Role.DECODE)]


def test_dynamo_scale_down_boundary_uses_sensitivity():
    c = DynamoPlannerController(DynamoConfig(scale_down_sensitivity=0.8))
    c.reset(INFO)
    # two workers, target 10_000: boundary = 10_000 · 1/2 · 0.8 = 4000
    assert c._verdict([3999.0, 100.0], 10_000.0) == -1
    assert c._verdict([4001.0, 100.0], 10_000.0) == 0


def test_dynamo_acts_every_adjustment_interval_only():
    views = [view(0, Role.PREFILL, [1500, 1000]), view(1, Role.PREFILL, [1500, 1000]),
             view(2, Role.DECODE), view(3, Role.DECODE)]
    c = dynamo()
    assert c.act(state(views, now=1.0)) != []
    assert [c.act(state(views, now=t)) for t in (2.0, 3.0, 4.0, 5.0)] == [[], [], [], []]
    assert c.act(state(views, now=6.0)) != []


def test_dynamo_nothing_moves_when_both_pools_want_more():
    views = [view(0, Role.PREFILL, [1500, 1000]), view(1, Role.PREFILL, [1500, 1000]),
             view(2, Role.DECODE, decode_tokens=12_000), view(3, Role.DECODE, decode_tokens=12_000)]
    assert dynamo().act(state(views)) == []


# ------------------------------------------------------------------ oracle helpers ------------
def test_oracle_flips_to_reaches_target_split_with_alg3_choices():
    o = OracleController()
    o.reset(INFO)
    views = [view(0, Role.PREFILL), view(1, Role.PREFILL), view(2, Role.DECODE, decode_tokens=50),
             view(3, Role.DECODE, decode_tokens=10)]
    assert o.flips_to(views, 3) == [Flip(3, Role.PREFILL)]
    assert o.flips_to(views, 1) == [Flip(0, Role.DECODE)]
    assert o.flips_to(views, 2) == []


def test_oracle_candidates_are_clipped_to_valid_splits():
    assert OracleController().candidates(1, 4) == [1, 2, 3]
    assert OracleController().candidates(4, 8) == [4, 3, 5, 2, 6]


def test_oracle_refuses_a_cluster_without_clone():
    with pytest.raises(TypeError, match="clone"):
        OracleController().bind_cluster(object())


# ------------------------------------------------------------------ registry ------------------
def test_registry_builds_every_builtin_policy():
    for spec, mode, ctrl in [("arrow", Mode.DISAGGREGATED, ArrowMonitor),
                             ("arrow-interval", Mode.DISAGGREGATED, ArrowIntervalController),
                             ("static:3", Mode.DISAGGREGATED, NoFlipController),
                             ("dynamo", Mode.DISAGGREGATED, DynamoPlannerController),
                             ("oracle", Mode.DISAGGREGATED, OracleController)]:
        p = make_policy(spec, 8)
        assert p.mode is mode and isinstance(p.controller, ctrl), spec
    assert make_policy("static:3", 8).initial_prefill == 3
    assert make_policy("arrow", 8).initial_prefill == 4


def test_registry_arrow_router_and_monitor_share_one_state():
    p = make_policy("arrow", 8)
    assert p.router.state is p.controller.state and p.router.enable_flips


def test_registry_interval_arrow_router_does_not_flip():
    assert make_policy("arrow-interval", 8).router.enable_flips is False


def test_registry_policies_are_fresh_objects():
    a, b = make_policy("arrow", 8), make_policy("arrow", 8)
    assert a.router is not b.router and a.controller is not b.controller


def test_registry_unknown_spec_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown controller 'nope'.*arrow.*static:P.*dynamo.*oracle"):
        make_policy("nope", 8)


@pytest.mark.parametrize("spec", ["static:0", "static:8", "static:x"])
def test_registry_rejects_bad_static_split(spec):
    with pytest.raises(ValueError, match="static"):
        make_policy(spec, 8)


def test_registry_static_best_must_be_expanded():
    with pytest.raises(ValueError, match="expand"):
        make_policy("static-best", 8)
    assert expand_spec("static-best", 4) == ["static:1", "static:2", "static:3"]
    assert expand_spec("arrow", 4) == ["arrow"]
