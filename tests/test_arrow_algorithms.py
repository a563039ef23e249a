"""Arrow Algorithms 1-3 pinned rule by rule on hand-built instance views (§5.3, §5.5; docs/arrow.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import pytest

from arrow_rl.cluster.base import SLO, ClusterInfo, Flip, InstanceView, MetricsWindow, Mode, PoolStats, Role
from arrow_rl.control import ControlState
from arrow_rl.arrow import ArrowConfig, ArrowIntervalController, ArrowMonitor, ArrowState
from arrow_rl.arrow.flip_selection import select_flip_instance
from arrow_rl.perf.profile import InstanceProfile
from arrow_rl.arrow.router import ArrowRouter
from arrow_rl.workload.workload import Request

# T(n) = 1e-6·n² + 1e-3·n + 0.01 s; decode interval = 1e-5·N + 0.025 s → MT(0.125) = 10_000 tokens.
PROFILE = InstanceProfile(prefill_a=1e-6, prefill_b=1e-3, prefill_c=0.01, decode_slope=1e-5, decode_intercept=0.025)
SLO_ = SLO(ttft_s=2.0, tpot_s=0.125)


def view(i: int, role: Role, *, prefill: list[int] = (), decode_tokens: int = 0, num_decode: int | None = None) -> InstanceView:
    prefill = list(prefill)
    return InstanceView(
        instance_id=i, role=role, num_prefill=len(prefill), prefill_tokens=sum(prefill),
        prefill_tokens_sq=float(sum(p * p for p in prefill)),
        num_decode=(num_decode if num_decode is not None else (1 if decode_tokens else 0)),
        decode_tokens=decode_tokens, kv_used_tokens=0, kv_capacity_tokens=100_000,
    )


@dataclass
class FakeContext:
    views: list[InstanceView]
    now: float = 100.0
    slo: SLO = SLO_
    flips: list[tuple[int, Role]] = field(default_factory=list)

    def instances(self):
        return self.views

    def flip(self, instance_id: int, role: Role) -> None:
        self.flips.append((instance_id, role))
        self.views = [replace(v, role=role) if v.instance_id == instance_id else v for v in self.views]

    def profile(self, instance_id: int) -> InstanceProfile:
        return PROFILE


def req(input_tokens: int = 500, output_tokens: int = 50) -> Request:
    return Request(request_id=0, arrival_s=0.0, input_tokens=input_tokens, output_tokens=output_tokens)


def window(lp: float = 0.0, ld: float = 0.0, *, pending: int = 0, arrivals: int = 0, isl: float = 0.0,
           start: float = 0.0, end: float = 1.0) -> MetricsWindow:
    return MetricsWindow(start_s=start, end_s=end, prefill=PoolStats(load=lp), decode=PoolStats(load=ld),
                         instances=(), arrivals=arrivals, arrival_input_tokens_mean=isl,
                         pending_predicted_ttft_misses=pending)


INFO = ClusterInfo(num_instances=4, preset="test", slo=SLO_, mode=Mode.DISAGGREGATED,
                   initial_roles=(Role.PREFILL, Role.PREFILL, Role.DECODE, Role.DECODE),
                   extra={"profiles": PROFILE})


# ---------------------------------------------------------------- Algorithm 1 (§5.3) ----------
def test_alg1_step1_decode_in_place_when_prefill_instance_became_decode():
    ctx = FakeContext([view(0, Role.DECODE, decode_tokens=50_000), view(1, Role.DECODE), view(2, Role.PREFILL)])
    # instance 0 is badly over MT, but the rule does not price: no KV transfer wins.
    assert ArrowRouter().route_decode(req(), 0, ctx) == 0


def test_alg1_decode_leg_leaves_a_prefill_instance_that_is_still_prefill():
    ctx = FakeContext([view(0, Role.PREFILL), view(1, Role.DECODE), view(2, Role.DECODE, decode_tokens=3000)])
    assert ArrowRouter().route_decode(req(), 0, ctx) == 1


def test_alg1_prefill_cost_is_decode_residue_then_predicted_ttft():
    router = ArrowRouter()
    ctx = FakeContext([view(0, Role.PREFILL, prefill=[1000, 200], decode_tokens=7)])
    [((c1, c2), i)] = router.prefill_costs(req(300), ctx.views, ctx)
    assert i == 0
    assert c1 == 7
    assert c2 == pytest.approx(PROFILE.prefill_time(1000) + PROFILE.prefill_time(200) + PROFILE.prefill_time(300))


def test_alg1_decode_cost_is_prefill_residue_then_tokens_minus_max_tokens():
    router = ArrowRouter()
    ctx = FakeContext([view(0, Role.DECODE, prefill=[40], decode_tokens=2000)])
    [((c1, c2), i)] = router.decode_costs(req(500), ctx.views, ctx)
    assert i == 0
    assert c1 == 40
    assert c2 == pytest.approx(2000 + 501 - PROFILE.max_tokens(SLO_.tpot_s))


def test_alg1_costs_with_several_profiles_price_each_instance_with_its_own():
    from dataclasses import replace as dc_replace

    slow = dc_replace(PROFILE, prefill_a=2 * PROFILE.prefill_a, prefill_b=2 * PROFILE.prefill_b,
                      prefill_c=2 * PROFILE.prefill_c)
    router = ArrowRouter()
    ctx = FakeContext([view(0, Role.PREFILL, prefill=[500]), view(1, Role.PREFILL, prefill=[500])])
    router._profiles[1] = slow
    (_, a), (_, b) = [c for c, _ in router.prefill_costs(req(300), ctx.views, ctx)]
    assert a == pytest.approx(PROFILE.prefill_time(500) + PROFILE.prefill_time(300))
    assert b == pytest.approx(slow.prefill_time(500) + slow.prefill_time(300))


def test_alg1_decode_costs_with_capacity_limits_cap_max_tokens_by_kv():
    from dataclasses import replace as dc_replace

    router = ArrowRouter(ArrowConfig(decode_capacity_limits=True))
    ctx = FakeContext([dc_replace(view(0, Role.DECODE, decode_tokens=2000), kv_capacity_tokens=2400)])
    [((_, c2), _)] = router.decode_costs(req(500), ctx.views, ctx)
    assert c2 == pytest.approx(2000 + 501 - min(PROFILE.max_tokens(SLO_.tpot_s), 2400))


def test_alg1_step3_lexicographic_c1_prefers_pure_prefill_instance_over_shorter_queue():
    # Instance 0: short queue but holds decode residue; instance 1: pure prefill, longer queue (still in SLO).
    ctx = FakeContext([view(0, Role.PREFILL, decode_tokens=100), view(1, Role.PREFILL, prefill=[400]),
                       view(2, Role.DECODE)])
    assert ArrowRouter().route_prefill(req(), ctx) == 1


def test_alg1_step3_slo_infeasible_instance_is_skipped_even_if_c1_is_lower():
    # instance 0 is pure prefill but its queue would exceed the 2 s TTFT SLO.
    ctx = FakeContext([view(0, Role.PREFILL, prefill=[1200, 1200]), view(1, Role.PREFILL, prefill=[100], decode_tokens=5),
                       view(2, Role.DECODE)])
    assert ArrowRouter().route_prefill(req(), ctx) == 1


def test_alg1_step2_candidate_set_role_prices_only_the_matching_pool():
    ctx = FakeContext([view(0, Role.PREFILL, prefill=[900]), view(1, Role.DECODE)])
    assert ArrowRouter(ArrowConfig(candidate_set="role")).route_prefill(req(), ctx) == 0
    # A1 'all': the empty decode instance is cheaper on (c1, c2), so it wins.
    assert ArrowRouter(ArrowConfig(candidate_set="all")).route_prefill(req(), ctx) == 1


def test_alg1_step4_flips_decode_to_prefill_when_no_prefill_instance_meets_ttft():
    ctx = FakeContext([view(0, Role.PREFILL, prefill=[1500, 1500]), view(1, Role.DECODE, decode_tokens=900),
                       view(2, Role.DECODE, decode_tokens=100)])
    state = ArrowState(decode_load=0.1)
    chosen = ArrowRouter(state=state).route_prefill(req(), ctx)
    assert chosen == 2 and ctx.flips == [(2, Role.PREFILL)]  # Alg. 3: least decode residue
    assert state.flip_log[-1].source == "alg1"


def test_alg1_step4_d2p_aborted_when_decode_pool_overloaded():
    ctx = FakeContext([view(0, Role.PREFILL, prefill=[1500, 1500]), view(1, Role.DECODE), view(2, Role.DECODE)])
    router = ArrowRouter(ArrowConfig(overload_rule="l_shrink"), state=ArrowState(decode_load=0.6))
    assert router.route_prefill(req(), ctx) == 0 and ctx.flips == []  # step 5 fallback


def test_alg1_overload_rule_l_expand_allows_d2p_between_shrink_and_expand():
    ctx = FakeContext([view(0, Role.PREFILL, prefill=[1500, 1500]), view(1, Role.DECODE), view(2, Role.DECODE)])
    router = ArrowRouter(ArrowConfig(overload_rule="l_expand"), state=ArrowState(decode_load=0.6))
    router.route_prefill(req(), ctx)
    assert ctx.flips == [(1, Role.PREFILL)]


def test_alg1_d2p_is_not_cooldown_gated():
    ctx = FakeContext([view(0, Role.PREFILL, prefill=[1500, 1500]), view(1, Role.DECODE), view(2, Role.DECODE)], now=100.0)
    state = ArrowState(decode_load=0.0, last_p2d_flip_s=99.9)
    ArrowRouter(ArrowConfig(cooldown_s=10.0), state=state).route_prefill(req(), ctx)
    assert ctx.flips == [(1, Role.PREFILL)]


def test_alg1_step4_flips_prefill_to_decode_when_no_decode_instance_has_tpot_capacity():
    ctx = FakeContext([view(0, Role.PREFILL, prefill=[900]), view(1, Role.PREFILL), view(2, Role.DECODE, decode_tokens=9_800)])
    state = ArrowState()
    chosen = ArrowRouter(state=state).route_decode(req(500), 0, ctx)
    assert chosen == 1 and ctx.flips == [(1, Role.DECODE)]  # Alg. 3: the idle prefill instance
    assert state.last_p2d_flip_s == ctx.now


def test_alg1_p2d_flip_is_cooldown_gated():
    ctx = FakeContext([view(0, Role.PREFILL), view(1, Role.PREFILL), view(2, Role.DECODE, decode_tokens=9_800)], now=105.0)
    state = ArrowState(last_p2d_flip_s=100.0)
    chosen = ArrowRouter(ArrowConfig(cooldown_s=10.0), state=state).route_decode(req(500), 0, ctx)
    assert ctx.flips == [] and chosen == 2  # step 5: cheapest decode instance, SLO regardless


def test_alg1_step5_falls_back_to_cheapest_without_flips():
    ctx = FakeContext([view(0, Role.PREFILL, prefill=[2000, 2000]), view(1, Role.PREFILL, prefill=[1500, 1500]),
                       view(2, Role.DECODE)])
    assert ArrowRouter(enable_flips=False).route_prefill(req(), ctx) == 1 and ctx.flips == []


def test_alg1_enable_flips_false_never_flips_on_decode_leg():
    ctx = FakeContext([view(0, Role.PREFILL), view(1, Role.PREFILL), view(2, Role.DECODE, decode_tokens=9_800)])
    ArrowRouter(enable_flips=False).route_decode(req(500), 0, ctx)
    assert ctx.flips == []


def test_alg1_flip_never_empties_the_decode_pool():
    ctx = FakeContext([view(0, Role.PREFILL, prefill=[1500, 1500]), view(1, Role.DECODE)])
    assert ArrowRouter(state=ArrowState(decode_load=0.0)).route_prefill(req(), ctx) == 0 and ctx.flips == []


# ---------------------------------------------------------------- Algorithm 3 (§5.5) ----------
def test_alg3_never_empties_a_pool():
    views = [view(0, Role.PREFILL), view(1, Role.DECODE), view(2, Role.DECODE)]
    assert select_flip_instance(views, Role.DECODE, PROFILE) is None
    assert select_flip_instance(views, Role.PREFILL, PROFILE) in (1, 2)


def test_alg3_min_pool_size_is_configurable():
    views = [view(0, Role.PREFILL), view(1, Role.PREFILL), view(2, Role.DECODE)]
    assert select_flip_instance(views, Role.DECODE, PROFILE, min_pool_size=2) is None


def test_alg3_prefers_instance_still_holding_target_phase_work():
    # instance 1 holds more prefill work but still has decode residue from an earlier flip.
    views = [view(0, Role.PREFILL), view(1, Role.PREFILL, prefill=[3000], decode_tokens=10), view(2, Role.DECODE)]
    assert select_flip_instance(views, Role.DECODE, PROFILE) == 1


def test_alg3_then_least_resident_work_of_the_source_phase():
    views = [view(0, Role.DECODE, decode_tokens=500), view(1, Role.DECODE, decode_tokens=100),
             view(2, Role.DECODE, decode_tokens=300), view(3, Role.PREFILL)]
    assert select_flip_instance(views, Role.PREFILL, PROFILE) == 1


def test_alg3_prefill_residue_is_priced_with_the_quadratic_profile():
    # Same token sum, but one long prompt costs more than several short ones under T quadratic.
    views = [view(0, Role.PREFILL, prefill=[4000]), view(1, Role.PREFILL, prefill=[1000] * 4), view(2, Role.DECODE)]
    assert select_flip_instance(views, Role.DECODE, PROFILE) == 1


def test_alg3_skips_unhealthy_instances():
    views = [replace(view(0, Role.DECODE), healthy=False), view(1, Role.DECODE, decode_tokens=999),
             view(2, Role.DECODE, decode_tokens=999), view(3, Role.PREFILL)]
    assert select_flip_instance(views, Role.PREFILL, PROFILE) == 1


# ---------------------------------------------------------------- Algorithm 2 (§5.5) ----------
def four_views():
    return [view(0, Role.PREFILL), view(1, Role.PREFILL, prefill=[500]), view(2, Role.DECODE), view(3, Role.DECODE)]


def run_monitor(ctrl, loads, start=0.0, dt=1.0):
    out = []
    for k, (lp, ld) in enumerate(loads):
        now = start + (k + 1) * dt
        out.append(ctrl.act(ControlState(now=now, window=window(lp, ld, start=now - dt, end=now), instances=four_views())))
    return out


def test_alg2_expand_trigger_must_be_sustained():
    ctrl = ArrowMonitor(ArrowConfig(sustain_count=3, cooldown_s=0.0))
    ctrl.reset(INFO)
    out = run_monitor(ctrl, [(0.9, 1.2), (0.9, 1.2), (0.9, 1.2)])
    assert out[:2] == [[], []] and out[2] == [Flip(0, Role.DECODE)]


def test_alg2_interrupted_trigger_restarts_the_sustain_count():
    ctrl = ArrowMonitor(ArrowConfig(sustain_count=2, cooldown_s=0.0))
    ctrl.reset(INFO)
    out = run_monitor(ctrl, [(0.9, 1.2), (0.9, 0.2), (0.9, 1.2)])
    assert out == [[], [], []]


def test_alg2_shrink_trigger_lp_below_shrink_below_ld():
    ctrl = ArrowMonitor(ArrowConfig(sustain_count=1, l_shrink=0.5, l_expand=1.0))
    ctrl.reset(INFO)
    assert run_monitor(ctrl, [(0.2, 0.7)]) == [[Flip(0, Role.DECODE)]]


def test_alg2_no_trigger_when_decode_below_shrink():
    ctrl = ArrowMonitor(ArrowConfig(sustain_count=1, l_shrink=0.5))
    ctrl.reset(INFO)
    assert run_monitor(ctrl, [(0.1, 0.4)]) == [[]]


def test_alg2_monitor_never_flips_decode_to_prefill():
    ctrl = ArrowMonitor(ArrowConfig(sustain_count=1))
    ctrl.reset(INFO)
    flips = [f for fl in run_monitor(ctrl, [(5.0, 0.0)] * 5) for f in fl]
    assert flips == []


def test_alg2_cooldown_applies_to_p2d_only():
    state = ArrowState()
    ctrl = ArrowMonitor(ArrowConfig(sustain_count=1, cooldown_s=10.0, reset_sustain_after_flip=False), state=state)
    ctrl.reset(INFO)
    out = run_monitor(ctrl, [(0.9, 1.5)] * 12)
    times = [k + 1 for k, fl in enumerate(out) if fl]
    assert times == [1, 11]
    # ...while a D→P flip by Algorithm 1 right after a P→D flip is not delayed.
    ctx = FakeContext([view(0, Role.PREFILL, prefill=[1500, 1500]), view(1, Role.DECODE), view(2, Role.DECODE)], now=11.5)
    ArrowRouter(state=ArrowState(decode_load=0.0, last_p2d_flip_s=11.0)).route_prefill(req(), ctx)
    assert ctx.flips == [(1, Role.PREFILL)]


def test_alg2_cooldown_is_one_clock_shared_with_the_router():
    state = ArrowState()
    ctx = FakeContext([view(0, Role.PREFILL), view(1, Role.PREFILL), view(2, Role.DECODE, decode_tokens=9_800)], now=3.5)
    ArrowRouter(state=state).route_decode(req(500), 0, ctx)  # Alg. 1 P→D at t=3.5
    assert ctx.flips == [(0, Role.DECODE)]
    ctrl = ArrowMonitor(ArrowConfig(sustain_count=1, cooldown_s=10.0), state=state)
    ctrl.info = INFO  # no reset: reset would start a new run and clear the shared clock
    ctrl.profiles = PROFILE
    out = run_monitor(ctrl, [(0.9, 1.5)] * 14, start=3.5)
    assert [k for k, fl in enumerate(out) if fl][0] == 9  # t = 13.5 = 3.5 + cooldown


def test_alg2_runs_every_update_interval_not_every_call():
    ctrl = ArrowMonitor(ArrowConfig(sustain_count=2, cooldown_s=0.0, update_interval_s=2.0))
    ctrl.reset(INFO)
    out = run_monitor(ctrl, [(0.9, 1.5)] * 4)  # calls at t=1,2,3,4 → passes at t=1,3
    assert [k + 1 for k, fl in enumerate(out) if fl] == [3]


# ------------------------------------------------------- interval controller (Alg. 1+2+3) -----
def interval(cfg: ArrowConfig | None = None) -> ArrowIntervalController:
    c = ArrowIntervalController(cfg or ArrowConfig(sustain_count=1))
    c.reset(INFO)
    return c


def test_interval_d2p_when_pending_requests_predicted_to_miss_ttft():
    c = interval(ArrowConfig(d2p_trigger="pending_misses"))
    st = ControlState(now=1.0, window=window(2.0, 0.1, pending=3), instances=four_views())
    assert c.act(st) == [Flip(2, Role.PREFILL)]


def test_interval_d2p_when_window_mean_request_fits_no_prefill_instance():
    views = [view(0, Role.PREFILL, prefill=[1500, 1500]), view(1, Role.PREFILL, prefill=[1500, 1500]),
             view(2, Role.DECODE, decode_tokens=40), view(3, Role.DECODE)]
    c = interval(ArrowConfig(d2p_trigger="predicted"))
    st = ControlState(now=1.0, window=window(2.0, 0.1, arrivals=5, isl=500.0), instances=views)
    assert c.act(st) == [Flip(3, Role.PREFILL)]


def test_interval_d2p_aborted_when_decode_overloaded():
    c = interval(ArrowConfig(d2p_trigger="pending_misses", sustain_count=5))
    st = ControlState(now=1.0, window=window(2.0, 0.7, pending=3), instances=four_views())
    assert c.act(st) == []


def test_interval_d2p_suppresses_p2d_in_the_same_interval():
    c = interval(ArrowConfig(d2p_trigger="pending_misses", overload_rule="l_expand", sustain_count=1, cooldown_s=0.0))
    st = ControlState(now=1.0, window=window(0.1, 0.7, pending=3), instances=four_views())  # Alg. 2 shrink would fire
    assert c.act(st) == [Flip(2, Role.PREFILL)]


def test_interval_p2d_capacity_rule_cooldown_gated():
    views = [view(0, Role.PREFILL), view(1, Role.PREFILL), view(2, Role.DECODE, decode_tokens=9_900), view(3, Role.DECODE, decode_tokens=9_900)]
    c = interval(ArrowConfig(sustain_count=5, cooldown_s=10.0))
    w = window(0.6, 0.6, arrivals=4, isl=500.0)
    assert c.act(ControlState(now=1.0, window=w, instances=views)) == [Flip(0, Role.DECODE)]
    assert c.act(ControlState(now=2.0, window=w, instances=views)) == []


def test_interval_controller_uses_alg2_like_the_monitor():
    c = interval(ArrowConfig(sustain_count=2, cooldown_s=0.0, p2d_capacity_rule=False))
    out = run_monitor(c, [(0.9, 1.2), (0.9, 1.2)])
    assert out == [[], [Flip(0, Role.DECODE)]]


# ---------------------------------------------------------------- config ----------------------
def test_config_rejects_shrink_above_expand():
    with pytest.raises(ValueError, match="l_shrink"):
        ArrowConfig(l_shrink=1.5, l_expand=1.0)


def test_config_yaml_error_names_file_and_field(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("cooldown_s: -1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*cooldown_s"):
        ArrowConfig.from_yaml(p)


def test_config_yaml_round_trip(tmp_path):
    import yaml

    p = tmp_path / "ok.yaml"
    p.write_text(yaml.safe_dump(ArrowConfig(l_expand=1.2, sustain_count=2).to_yaml_dict()))
    assert ArrowConfig.from_yaml(p) == ArrowConfig(l_expand=1.2, sustain_count=2)


def test_state_initially_allows_p2d():
    assert ArrowState().p2d_allowed(0.0, 1e9) and ArrowState().last_p2d_flip_s == -math.inf


def test_alg1_ttft_headroom_extension_tightens_feasibility():
    # c2 for instance 0 = T(600)+T(500) = 0.97 + 0.76 = 1.73 s; SLO 2 s: feasible at 1.0, not at 0.8.
    views = [view(0, Role.PREFILL, prefill=[600]), view(1, Role.PREFILL, prefill=[1100], decode_tokens=1),
             view(2, Role.DECODE), view(3, Role.DECODE, decode_tokens=5)]
    assert ArrowRouter(ArrowConfig(ttft_headroom=1.0), enable_flips=False).route_prefill(req(), FakeContext(list(views))) == 0
    ctx = FakeContext(list(views))
    ArrowRouter(ArrowConfig(ttft_headroom=0.8), state=ArrowState(decode_load=0.0)).route_prefill(req(), ctx)
    assert ctx.flips == [(2, Role.PREFILL)]


def test_alg1_decode_capacity_limits_extension_respects_kv_capacity():
    # MT = 10_000 tokens but the instance only holds 3_000 KV tokens: paper rule says feasible,
    # the extension says no room → P→D flip.
    views = [view(0, Role.PREFILL), view(1, Role.PREFILL),
             replace(view(2, Role.DECODE, decode_tokens=2_800), kv_capacity_tokens=3_000)]
    paper = FakeContext(list(views))
    assert ArrowRouter(ArrowConfig()).route_decode(req(500), 0, paper) == 2 and paper.flips == []
    ext = FakeContext(list(views))
    ArrowRouter(ArrowConfig(decode_capacity_limits=True)).route_decode(req(500), 0, ext)
    assert ext.flips == [(0, Role.DECODE)]


def test_alg1_decode_capacity_limits_extension_respects_max_num_seqs():
    @dataclass
    class Info:
        extra: dict

    views = [view(0, Role.PREFILL), view(1, Role.PREFILL), view(2, Role.DECODE, decode_tokens=100, num_decode=4)]
    ctx = FakeContext(list(views))
    ctx.info = Info({"max_num_seqs": 4})
    ArrowRouter(ArrowConfig(decode_capacity_limits=True)).route_decode(req(50), 0, ctx)
    assert ctx.flips == [(0, Role.DECODE)]


# ---------------------------------------------------------------- a teacher beside a learner ------
def test_sync_applied_undoes_a_proposal_that_was_not_applied():
    # Issue 12 §2: the teacher's cooldown and sustain count follow the applied flips. Proposed P→D at
    # t=1 but the learner did nothing: no cooldown started, the sustained trigger still stands, so the
    # teacher proposes again at t=2 (without the sync the 10 s cooldown would silence it until t=11).
    ctrl = ArrowMonitor(ArrowConfig(sustain_count=2, cooldown_s=10.0))
    ctrl.reset(INFO)
    out = run_monitor(ctrl, [(0.9, 1.5), (0.9, 1.5)])
    assert out == [[], [Flip(0, Role.DECODE)]]
    ctrl.sync_applied(2.0, out[1], [])
    assert ctrl.state.last_p2d_flip_s == -math.inf and ctrl.state.flip_log == []
    again = ctrl.act(ControlState(now=3.0, window=window(0.9, 1.5, start=2.0, end=3.0), instances=four_views()))
    assert again == [Flip(0, Role.DECODE)]


def test_sync_applied_records_the_learners_flip_and_starts_the_cooldown():
    ctrl = ArrowMonitor(ArrowConfig(sustain_count=1, cooldown_s=10.0))
    ctrl.reset(INFO)
    assert run_monitor(ctrl, [(0.9, 0.1)]) == [[]]  # no trigger: the teacher proposes nothing
    ctrl.sync_applied(1.0, [], [Flip(1, Role.DECODE)])  # ...but the learner flipped P→D
    assert ctrl.state.last_p2d_flip_s == 1.0 and [e.instance_id for e in ctrl.state.flip_log] == [1]
    # The cooldown now gates the teacher's own P→D proposals.
    out = run_monitor(ctrl, [(0.9, 1.5)] * 3, start=1.0)
    assert out == [[], [], []]


def test_sync_applied_is_a_noop_when_the_proposal_was_applied():
    ctrl = ArrowMonitor(ArrowConfig(sustain_count=1, cooldown_s=10.0))
    ctrl.reset(INFO)
    out = run_monitor(ctrl, [(0.9, 1.5)])
    ctrl.sync_applied(1.0, out[0], out[0])
    assert ctrl.state.last_p2d_flip_s == 1.0 and len(ctrl.state.flip_log) == 1


def test_a_bounded_flip_log_keeps_the_newest_and_still_undoes_only_the_unapplied_proposal():
    from arrow_rl.arrow.config import ArrowState

    state = ArrowState(flip_log_limit=3)
    for k in range(7):
        state.record(float(k), k % 4, Role.PREFILL, "alg1")
    assert state.flips_recorded == 7 and [e.time_s for e in state.flip_log] == [4.0, 5.0, 6.0]
    before = state.flips_recorded
    state.record(7.0, 0, Role.DECODE, "alg2")  # a proposal...
    state.record(8.0, 1, Role.DECODE, "alg2")
    state.forget_flips_since(before)           # ...that did not take effect
    assert state.flips_recorded == 7 and [e.time_s for e in state.flip_log] == [4.0, 5.0, 6.0]
