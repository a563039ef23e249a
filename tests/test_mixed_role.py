"""The MIXED role (issue 12 step 1, docs/design_mixed_role.md): a MIXED instance serves plain
requests whole, like a colocated one; flips to and from it drain as P<->D flips do (Arrow §5.2);
``MixedDispatcher`` splits requests between Algorithm 1 and the MIXED pool by ``mixed_policy``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arrow_rl.arrow import ArrowRouter, MixedConfig, MixedDispatcher, select_flip_instance
from arrow_rl.cluster.base import SLO, Flip, InstanceView, Role
from arrow_rl.cluster.emulator import EmulatedCluster, EmulatorConfig
from arrow_rl.cluster.emulator.requests import PREFILLING, WAITING
from arrow_rl.controllers.baselines import OracleConfig
from arrow_rl.controllers.registry import Policy, make_policy
from arrow_rl.evaluation.runner import run_policy
from arrow_rl.perf.presets import get_preset
from arrow_rl.perf.profile import profile_instance
from arrow_rl.routing import make_router
from arrow_rl.workload.generators import generate
from arrow_rl.workload.workload import Request, Workload

PRESET = "h100-llama3.1-8b-tp1"


def exact(records) -> list[tuple[str, ...]]:
    """Records as exact tuples (float reprs round-trip; NaN compares equal to NaN)."""
    return [tuple(repr(getattr(r, f)) for f in r.__dataclass_fields__)
            for r in sorted(records, key=lambda r: r.request_id)]


def busy_workload() -> Workload:
    return generate({"kind": "poisson", "rate": 25.0, "duration_s": 12.0,
                     "mix": {"input": {"kind": "lognormal", "mean": 2000, "cv": 0.8, "max_tokens": 12000},
                             "output": {"kind": "lognormal", "mean": 150, "cv": 0.8, "max_tokens": 1500}}}, seed=7)


def prefix_workload() -> Workload:
    return generate({"kind": "poisson", "rate": 20.0, "duration_s": 10.0,
                     "prefixes": {"kind": "shared_prompt", "groups": 2, "prompt_tokens": 2000}}, seed=8)


def cluster(w: Workload, router, **kw) -> EmulatedCluster:
    return EmulatedCluster(w, EmulatorConfig(preset=PRESET, **kw), router=router)


class Scripted:
    """Prefill legs to ``prefill[request_id]``, decode legs to ``decode``."""

    name = "scripted"

    def __init__(self, prefill: dict[int, int], decode: int) -> None:
        self.prefill, self.decode = prefill, decode

    def reset(self, n):
        pass

    def route_prefill(self, request, ctx):
        return self.prefill[request.request_id]

    def route_decode(self, request, prefill_instance, ctx):
        return self.decode


def two_requests(second_at: float, n_in: int = 6000, n_out: int = 200) -> Workload:
    return Workload(np.array([0.0, second_at]), np.array([n_in, 300]), np.array([n_out, 20]))


def start_of_first_prompt(c: EmulatedCluster) -> None:
    """Advance until request 0 is resident and its prompt not yet computed."""
    c.advance(get_preset(PRESET).latency.frontend_s + 1e-4)
    assert c.requests.state[0] in (WAITING, PREFILLING)


# ---------------------------------------------------------------------------------- the role ----
def test_role_mixed_has_no_other_role_so_arrow_never_flips_it():
    assert Role("mixed") is Role.MIXED
    with pytest.raises(ValueError, match="PREFILL<->DECODE only"):
        Role.MIXED.other()


def test_initial_roles_are_prefill_then_decode_then_mixed():
    cfg = EmulatorConfig(preset=PRESET, num_instances=6, num_prefill=2, num_mixed=3)
    assert cfg.initial_roles() == (Role.PREFILL, Role.PREFILL, Role.DECODE, Role.MIXED, Role.MIXED, Role.MIXED)
    assert EmulatorConfig(preset=PRESET, num_instances=6, num_mixed=2).prefill_count == 2   # half of the rest
    assert EmulatorConfig(preset=PRESET, num_instances=3, num_mixed=3).initial_roles() == (Role.MIXED,) * 3


@pytest.mark.parametrize("kw, message", [
    (dict(mode="colocated", num_mixed=2), "need mode disaggregated"),
    (dict(num_mixed=5), "exceeds num_instances"),
    (dict(num_mixed=2, num_prefill=3), "between 0 and num_instances-num_mixed"),
])
def test_bad_mixed_splits_are_refused_naming_the_field(kw, message):
    with pytest.raises(ValueError, match=message):
        EmulatorConfig(preset=PRESET, num_instances=4, **kw)


# ------------------------------------------------------------------ MIXED serves as colocated ----
@pytest.mark.parametrize("make_workload", [busy_workload, prefix_workload])
def test_an_all_mixed_cluster_serves_exactly_as_colocated_mode(make_workload):
    w = make_workload()
    colocated = cluster(w, make_router("least-loaded"), num_instances=3, mode="colocated")
    colocated.run_until_done()
    mixed = cluster(w, MixedDispatcher(ArrowRouter(enable_flips=False)), num_instances=3, num_mixed=3)
    mixed.run_until_done()
    assert exact(mixed.completed()) == exact(colocated.completed())
    assert mixed.num_transfers == 0


def test_the_static_all_mixed_policy_scores_exactly_as_the_colocated_policy():
    w = busy_workload()
    cfg = EmulatorConfig(preset=PRESET, num_instances=3, slo_ttft_s=1.0, slo_tpot_s=0.03)
    a = run_policy(w, cfg, make_policy("colocated", 3))
    b = run_policy(w, cfg, make_policy("static:0:0:3", 3))
    assert exact(b.records) == exact(a.records)
    assert (b.attainment, b.finished) == (a.attainment, a.finished)


def test_a_pdm_cluster_finishes_every_request_and_its_kv_accounting_audits_clean():
    w = prefix_workload()
    c = cluster(w, MixedDispatcher(ArrowRouter(enable_flips=False), MixedConfig(mixed_policy="fraction")),
                num_instances=4, num_prefill=1, num_mixed=2)
    c.audit_every_event = True
    c.run_until_done()
    c.audit()
    recs = c.completed()
    assert len(recs) == len(w) and all(r.finished for r in recs)
    plain = [r for r in recs if r.prefill_instance in (2, 3)]
    split = [r for r in recs if r.prefill_instance == 0]
    assert len(plain) + len(split) == len(w) and abs(len(plain) - len(split)) <= 1   # fraction 0.5
    # a plain request decodes where it was prefilled; its first token is its prompt's own
    assert all(r.decode_instance == r.prefill_instance and r.first_token_s == r.prefill_done_s for r in plain)
    assert all(r.decode_instance == 1 for r in split)
    assert c.num_transfers == len(split)


def test_the_metrics_window_reports_the_mixed_pool():
    c = cluster(busy_workload(), MixedDispatcher(ArrowRouter(enable_flips=False)),
                num_instances=4, num_prefill=1, num_mixed=2)
    w = c.advance(5.0)
    assert w.mixed.num_instances == 2 and w.prefill.num_instances == 1 and w.decode.num_instances == 1
    assert w.mixed.load > 0 and w.mixed.first_tokens > 0
    assert {s.role for s in w.instances} == {Role.PREFILL, Role.DECODE, Role.MIXED}


# --------------------------------------------------------------------------------------- flips ----
def test_p_to_m_flip_keeps_admitted_prompts_disaggregated_and_makes_new_ones_plain():
    w = two_requests(second_at=0.5)
    c = cluster(w, Scripted({0: 0, 1: 0}, decode=1), num_instances=2, num_prefill=1)
    start_of_first_prompt(c)
    c.flip(0, Role.MIXED)
    c.run_until_done()
    first, second = sorted(c.completed(), key=lambda r: r.request_id)
    assert (first.prefill_instance, first.decode_instance) == (0, 1)     # admitted before: its KV moved
    assert (second.prefill_instance, second.decode_instance) == (0, 0)   # after: served whole
    assert c.num_transfers == 1 and all(r.finished for r in (first, second))


def test_m_to_d_flip_keeps_a_plain_request_decoding_in_place():
    w = two_requests(second_at=0.5)
    c = cluster(w, Scripted({0: 2, 1: 0}, decode=2), num_instances=3, num_prefill=1, num_mixed=1)
    start_of_first_prompt(c)
    c.flip(2, Role.DECODE)
    c.run_until_done()
    first, second = sorted(c.completed(), key=lambda r: r.request_id)
    assert (first.prefill_instance, first.decode_instance) == (2, 2)     # plain: no KV moves
    assert first.first_token_s == first.prefill_done_s
    assert (second.prefill_instance, second.decode_instance) == (0, 2)   # new work: a decode leg
    assert c.num_transfers == 1


def test_d_to_m_flip_lets_resident_decode_legs_finish_and_takes_plain_requests():
    w = two_requests(second_at=1.0, n_in=2000, n_out=800)
    c = cluster(w, Scripted({0: 0, 1: 1}, decode=1), num_instances=2, num_prefill=1)
    c.advance(0.5)
    assert c.instances()[1].num_decode == 1        # request 0's decode leg is on instance 1
    c.flip(1, Role.MIXED)
    c.run_until_done()
    first, second = sorted(c.completed(), key=lambda r: r.request_id)
    assert (first.prefill_instance, first.decode_instance) == (0, 1) and first.finished
    assert (second.prefill_instance, second.decode_instance) == (1, 1)
    assert c.num_transfers == 1


def test_a_flip_to_mixed_admits_nothing_during_the_flip_delay():
    w = two_requests(second_at=0.1, n_in=300, n_out=20)
    c = cluster(w, Scripted({0: 1, 1: 0}, decode=1), num_instances=2, num_prefill=1, flip_delay_s=0.5)
    c.flip(0, Role.MIXED)   # at t = 0
    assert not c.instances()[0].healthy
    c.run_until_done()
    second = sorted(c.completed(), key=lambda r: r.request_id)[1]
    assert second.prefill_instance == second.decode_instance == 0
    assert second.prefill_done_s > 0.5


def test_arrow_on_a_pdm_cluster_flips_p_and_d_only():
    w = generate({"kind": "phase_shift", "rate": 45.0, "duration_s": 40.0, "phase_s": 10.0, "cv": 1.5,
                  "phases": [{"input": {"kind": "lognormal", "mean": 3000, "cv": 0.6, "max_tokens": 16384},
                              "output": {"kind": "lognormal", "mean": 30, "cv": 0.8, "max_tokens": 1024}},
                             {"input": {"kind": "lognormal", "mean": 300, "cv": 0.6, "max_tokens": 16384},
                              "output": {"kind": "lognormal", "mean": 600, "cv": 0.6, "max_tokens": 4096}}]},
                 seed=4)
    arrow = make_policy("arrow", 5)
    policy = Policy("arrow+mixed", arrow.mode, MixedDispatcher(arrow.router, MixedConfig(mixed_policy="fraction",
                    fraction=0.2)), arrow.controller, 2, initial_mixed=1)
    cfg = EmulatorConfig(preset=PRESET, num_instances=5, slo_ttft_s=1.0, slo_tpot_s=0.03)
    r = run_policy(w, cfg, policy)
    assert {f.source for f in r.flips} == {"alg1", "controller"}, "Alg. 1 and Alg. 2 should both flip here"
    assert all(f.instance_id != 4 and f.role != "mixed" for f in r.flips)
    assert r.finished == len(w)


def test_algorithm_3_never_picks_a_mixed_instance():
    def view(i, role):
        return InstanceView(i, role, 0, 0, 0.0, 0, 0, 0, 1000)
    views = [view(0, Role.PREFILL), view(1, Role.DECODE), view(2, Role.DECODE), view(3, Role.MIXED), view(4, Role.MIXED)]
    assert select_flip_instance(views, Role.PREFILL) == 1
    assert select_flip_instance(views, Role.DECODE) is None   # one prefill instance: the pool stays
    with pytest.raises(ValueError):
        select_flip_instance(views, Role.MIXED)


# -------------------------------------------------------------------------- the mixed policies ----
class Ctx:
    """A routing context over hand-made views (P 0, D 1, M 2 unless given)."""

    now = 0.0
    slo = SLO(1.0, 0.03)

    def __init__(self, views):
        self.views = views
        self.prof = profile_instance(get_preset(PRESET))

    def instances(self):
        return self.views

    def profile(self, i):
        return self.prof

    def flip(self, i, role):
        raise AssertionError("the dispatcher never flips")


def view(i, role, prefill_tokens=0, decode_tokens=0, healthy=True):
    n = 1 if prefill_tokens else 0
    return InstanceView(i, role, n, prefill_tokens, float(prefill_tokens) ** 2, 0, decode_tokens, 0, 10**6, healthy)


def req(rid, n_in):
    return Request(rid, 0.0, n_in, 10)


def dispatcher(**kw) -> MixedDispatcher:
    d = MixedDispatcher(ArrowRouter(enable_flips=False), MixedConfig(**kw))
    d.reset(3)
    return d


def test_fraction_sends_a_fixed_share_to_the_mixed_pool():
    d = dispatcher(mixed_policy="fraction", fraction=0.25)
    ctx = Ctx([view(0, Role.PREFILL), view(1, Role.DECODE), view(2, Role.MIXED)])
    picks = [d.route_prefill(req(k, 500), ctx) for k in range(8)]
    assert picks == [2, 0, 0, 0, 2, 0, 0, 0]   # after k requests, ceil(k/4) went MIXED


def test_prompt_threshold_sends_short_prompts_to_the_mixed_pool():
    d = dispatcher(mixed_policy="prompt-threshold", prompt_threshold_tokens=1000)
    ctx = Ctx([view(0, Role.PREFILL), view(1, Role.DECODE), view(2, Role.MIXED)])
    assert [d.route_prefill(req(k, n), ctx) for k, n in enumerate([999, 1000, 50, 8000])] == [2, 0, 2, 0]


def test_cost_sends_mixed_only_when_it_predicts_an_earlier_first_token_and_tpot_room():
    d = dispatcher(mixed_policy="cost", cost_counts_handoff=False)
    idle = Ctx([view(0, Role.PREFILL), view(1, Role.DECODE), view(2, Role.MIXED)])
    assert d.route_prefill(req(0, 500), idle) == 0                    # a tie goes disaggregated
    queued = Ctx([view(0, Role.PREFILL, prefill_tokens=20000), view(1, Role.DECODE), view(2, Role.MIXED)])
    assert d.route_prefill(req(1, 500), queued) == 2                  # MIXED: earlier first token
    prof = queued.prof
    full = int((0.03 - prof.decode_intercept) / prof.decode_slope)   # decode tokens at the TPOT SLO
    crowded = Ctx([view(0, Role.PREFILL, prefill_tokens=20000), view(1, Role.DECODE),
                   view(2, Role.MIXED, decode_tokens=full)])
    assert d.route_prefill(req(2, 500), crowded) == 0                 # no TPOT room on the MIXED one


def test_cost_counting_the_handoff_charges_the_kv_transfer_and_the_decode_first_step():
    idle = [view(0, Role.PREFILL), view(1, Role.DECODE, decode_tokens=4000), view(2, Role.DECODE, decode_tokens=900),
            view(3, Role.MIXED)]
    off = dispatcher(mixed_policy="cost", cost_counts_handoff=False)
    assert off.route_prefill(req(0, 500), Ctx(idle)) == 0      # prefill against prefill: a tie goes disaggregated
    d = dispatcher(mixed_policy="cost")                          # on by default
    ctx = Ctx(idle)
    ctx.preset = get_preset(PRESET)
    want = ctx.preset.kv_transfer_time(500) + ctx.prof.decode_interval(900 + 500 + 1)   # least-loaded decode
    assert d.predicted_handoff(req(0, 500), idle, ctx) == pytest.approx(want) and want > 0
    assert d.route_prefill(req(0, 500), ctx) == 3                       # the handoff makes MIXED earlier
    by_name = Ctx(idle)                                                 # a context naming its preset only
    by_name.info = type("Info", (), {"preset": PRESET})()
    assert dispatcher(cost_counts_handoff=True).predicted_handoff(req(0, 500), idle, by_name) == pytest.approx(want)


def test_the_least_loaded_healthy_mixed_instance_is_picked():
    d = dispatcher(mixed_policy="fraction", fraction=1.0)
    ctx = Ctx([view(0, Role.PREFILL), view(1, Role.DECODE), view(2, Role.MIXED, decode_tokens=500),
               view(3, Role.MIXED, prefill_tokens=300, healthy=False), view(4, Role.MIXED, prefill_tokens=400)])
    assert d.route_prefill(req(0, 100), ctx) == 4


def test_without_a_healthy_mixed_instance_requests_go_disaggregated():
    d = dispatcher(mixed_policy="fraction", fraction=1.0)
    ctx = Ctx([view(0, Role.PREFILL), view(1, Role.DECODE), view(2, Role.MIXED, healthy=False)])
    assert d.route_prefill(req(0, 100), ctx) == 0


def test_without_a_disaggregated_path_every_request_goes_mixed():
    d = dispatcher(mixed_policy="fraction", fraction=0.0)
    ctx = Ctx([view(0, Role.DECODE), view(1, Role.MIXED), view(2, Role.MIXED, decode_tokens=10)])
    assert [d.route_prefill(req(k, 100), ctx) for k in range(3)] == [1, 1, 1]
    assert d.decisions == 0 and d.sent_mixed == 3


@pytest.mark.parametrize("spec", ["arrow", "arrow-interval", "static:2", "dynamo", "oracle"])
def test_every_disaggregated_policy_carries_the_dispatcher_and_without_mixed_instances_it_changes_nothing(spec):
    w = busy_workload()
    cfg = EmulatorConfig(preset=PRESET, num_instances=4, slo_ttft_s=1.0, slo_tpot_s=0.03)
    if spec == "oracle":
        w = Workload(w.arrival_s[:120], w.input_tokens[:120], w.output_tokens[:120])
    pd_only = OracleConfig(use_mixed=False)   # the oracle's own MIXED moves: tests/test_role_flips.py
    wrapped = make_policy(spec, 4, oracle_config=pd_only)
    assert isinstance(wrapped.router, MixedDispatcher)
    p = make_policy(spec, 4, oracle_config=pd_only)
    bare = Policy(p.name, p.mode, p.router.inner, p.controller, p.initial_prefill, needs_cluster=p.needs_cluster)
    a, b = run_policy(w, cfg, wrapped), run_policy(w, cfg, bare)
    assert exact(a.records) == exact(b.records)
    assert [(f.time_s, f.instance_id, f.role) for f in a.flips] == [(f.time_s, f.instance_id, f.role) for f in b.flips]


def test_a_controller_that_flips_an_instance_to_mixed_gets_it_served():
    class ToMixed:
        name = "to-mixed"

        def reset(self, info):
            self.done = False

        def act(self, state):
            if self.done or state.now < 2.0:
                return []
            self.done = True
            return [Flip(3, Role.MIXED)]

    w = busy_workload()
    cfg = EmulatorConfig(preset=PRESET, num_instances=4, slo_ttft_s=1.0, slo_tpot_s=0.03)
    p = make_policy("static:2", 4)
    r = run_policy(w, cfg, Policy("to-mixed", p.mode, p.router, ToMixed(), 2))
    plain = [x for x in r.records if x.prefill_instance == 3]
    assert plain and all(x.arrival_s > 2.0 for x in plain) and p.router.sent_mixed == len(plain)
    assert all(x.decode_instance == 3 for x in plain) and len(r.records) == len(w)


def test_a_dispatcher_around_a_dispatcher_replaces_it():
    p = make_policy("arrow", 4)
    outer = MixedDispatcher(p.router, MixedConfig(mixed_policy="fraction"))
    assert isinstance(p.router, MixedDispatcher) and outer.inner is p.router.inner and outer.state is p.controller.state


def test_a_bad_mixed_config_is_one_line_naming_the_field():
    with pytest.raises(ValueError, match=r"x.yaml: .*mixed_policy.*'fastest'"):
        MixedConfig.from_mapping({"mixed_policy": "fastest"}, "x.yaml")


# --------------------------------------------------------------------------- static:P:D:M spec ----
def test_static_pdm_builds_the_split_and_static_p_keeps_its_meaning():
    p = make_policy("static:1:1:2", 4)
    assert (p.name, p.initial_prefill, p.initial_mixed) == ("static:1:1:2", 1, 2)
    assert isinstance(p.router, MixedDispatcher)
    q = make_policy("static:3", 4)
    assert (q.name, q.initial_prefill, q.initial_mixed) == ("static:3", 3, 0)
    assert make_policy("static:3:1:0", 4).name == "static:3"


@pytest.mark.parametrize("spec, message", [
    ("static:1:1:1", "add up to 4"), ("static:1:0:3", "both a prefill and a decode"),
    ("static:x:1:2", "three integers")])
def test_bad_static_pdm_specs_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        make_policy(spec, 4)


# ------------------------------------------------------------------- refused where not built yet ----
def test_the_live_router_accepts_flips_to_mixed():
    from arrow_rl.cluster.live.state import RouterState

    s = RouterState(["http://a", "http://b"], ["prefill", "decode"])
    s.apply_flips([(0, Role.MIXED)], source="admin")   # the MIXED instance is the serving path now
    assert [i.role for i in s.instances] == [Role.MIXED, Role.DECODE] and s.num_mixed == 1


def test_the_live_config_accepts_a_mixed_instance():
    from arrow_rl.serving.config import InstanceSpec

    assert InstanceSpec(url="http://a", role="mixed").role is Role.MIXED


def test_the_env_refuses_mixed_instances():
    from envs.observation import frame_features

    views = [view(0, Role.PREFILL), view(1, Role.MIXED)]
    with pytest.raises(ValueError, match="MIXED"):
        frame_features(type("S", (), {"window": None, "instances": views})(), SLO(1, 1), None, 2, 2, math.inf)
