"""``flips_to_roles`` (the fewest flips to a P:D:M split) and the oracle's moves to and from MIXED
(issue 12 item 3, docs/design_mixed_role.md)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from arrow_rl.arrow import select_flip_instance
from arrow_rl.arrow.monitor import with_role
from arrow_rl.cluster.base import Flip, InstanceView, Role
from arrow_rl.cluster.emulator import EmulatorConfig
from arrow_rl.controllers.baselines import OracleConfig, OracleController
from arrow_rl.controllers.registry import Policy, make_policy
from arrow_rl.controllers.role_flips import flips_to_roles
from arrow_rl.controllers.splits import Split, all_splits
from arrow_rl.evaluation.runner import run_policy
from arrow_rl.perf.presets import get_preset
from arrow_rl.perf.profile import profile_instance
from arrow_rl.workload.generators import generate

P, D, M = Role.PREFILL, Role.DECODE, Role.MIXED
PRESET = "h100-llama3.1-8b-tp1"
PROF = profile_instance(get_preset(PRESET))


def view(i, role, prefill_tokens=0, decode_tokens=0, num_decode=None, healthy=True):
    n = 1 if prefill_tokens else 0
    nd = (1 if decode_tokens else 0) if num_decode is None else num_decode
    return InstanceView(i, role, n, prefill_tokens, float(prefill_tokens) ** 2, nd, decode_tokens, 0, 10**6, healthy)


def apply(views, flips):
    for f in flips:
        views = with_role(views, f.instance_id, f.role)
    return views


def random_views(rng: random.Random, n: int, healthy_share: float = 1.0) -> list[InstanceView]:
    return [view(i, rng.choice([P, D, M]), prefill_tokens=rng.choice([0, 300, 2000, 9000]),
                 decode_tokens=rng.choice([0, 500, 4000]), num_decode=rng.choice([0, 1, 3]),
                 healthy=rng.random() < healthy_share) for i in range(n)]


# --------------------------------------------------------------------------- flips_to_roles ----
def test_any_target_split_is_reached_with_the_fewest_flips():
    rng = random.Random(3)
    for _ in range(200):
        n = rng.randint(2, 9)
        views = random_views(rng, n)
        target = rng.choice(all_splits(n))
        flips = flips_to_roles(views, target.roles(), PROF)
        now = Split.of(views)
        assert Split.of(apply(views, flips)) == target
        assert len(flips) == now.distance(target) == len({f.instance_id for f in flips})
        assert all(next(v for v in views if v.instance_id == f.instance_id).role is not f.role for f in flips)


def test_a_pd_target_gives_exactly_the_flips_of_repeated_algorithm_3_guard_included():
    rng = random.Random(5)
    for _ in range(300):
        n = rng.randint(2, 9)
        views = [v if v.role is not M else view(v.instance_id, rng.choice([P, D]), v.prefill_tokens, v.decode_tokens,
                                                 v.num_decode, v.healthy) for v in random_views(rng, n, 0.8)]
        have = sum(v.role is P for v in views)
        if not 1 <= have <= n - 1:
            continue
        goal = rng.randint(1, n - 1)
        legacy, vs = [], list(views)   # the oracle's flips_to before MIXED existed
        role = P if goal > have else D
        for _ in range(abs(goal - have)):
            chosen = select_flip_instance(vs, role, PROF)
            if chosen is None:
                break
            legacy.append(Flip(chosen, role))
            vs = with_role(vs, chosen, role)
        assert flips_to_roles(views, {P: goal, D: n - goal}, PROF) == legacy


def test_into_mixed_the_least_resident_work_of_the_pool_left_moves():
    views = [view(0, P, prefill_tokens=9000), view(1, P, prefill_tokens=300), view(2, P, prefill_tokens=2000),
             view(3, D, decode_tokens=4000), view(4, D, decode_tokens=500), view(5, D, decode_tokens=9000)]
    assert flips_to_roles(views, {P: 2, D: 2, M: 2}, PROF) == [Flip(1, M), Flip(4, M)]


def test_out_of_mixed_the_least_loaded_mixed_instance_moves():
    views = [view(0, P), view(1, D), view(2, M, prefill_tokens=100, decode_tokens=900),
             view(3, M, decode_tokens=400), view(4, M, prefill_tokens=3000)]
    assert flips_to_roles(views, {P: 2, D: 1, M: 2}, PROF) == [Flip(3, P)]
    assert flips_to_roles(views, {P: 2, D: 2, M: 1}, PROF) == [Flip(3, P), Flip(2, D)]


def test_all_mixed_empties_both_pools_and_from_all_mixed_both_pools_fill():
    views = [view(0, P), view(1, D), view(2, M), view(3, M)]
    assert flips_to_roles(views, {M: 4}, PROF) == [Flip(0, M), Flip(1, M)]
    every = [view(i, M, decode_tokens=100 * (4 - i)) for i in range(4)]
    assert flips_to_roles(every, {P: 1, D: 1, M: 2}, PROF) == [Flip(3, P), Flip(2, D)]


def test_unhealthy_instances_do_not_move_and_a_kept_pool_keeps_a_healthy_instance():
    views = [view(0, P), view(1, P, healthy=False), view(2, D), view(3, D)]
    assert flips_to_roles(views, {P: 1, D: 3}, PROF) == []          # 0 is P's only healthy instance
    assert flips_to_roles(views, {P: 1, D: 2, M: 1}, PROF) == []          # ... whichever pool it would join
    assert flips_to_roles(views, {P: 2, D: 1, M: 1}, PROF) == [Flip(2, M)]


@pytest.mark.parametrize("target", [{P: 1, D: 1}, {P: 3, D: 2, M: -1}, {P: 1, D: 1, M: 1, "x": 1}])
def test_a_target_that_is_not_a_split_of_the_cluster_is_refused(target):
    views = [view(0, P), view(1, D), view(2, M)]
    with pytest.raises(ValueError, match="adding up to 3 instances"):
        flips_to_roles(views, target, PROF)


# ----------------------------------------------------------------------------------- oracle ----
def oracle(**kw) -> OracleController:
    o = OracleController(OracleConfig(**kw))
    o.reset(_info())
    return o


def _info():
    from arrow_rl.cluster.base import SLO, ClusterInfo, Mode

    return ClusterInfo(8, PRESET, SLO(1.0, 0.03), Mode.DISAGGREGATED, (P,) * 4 + (D,) * 4)


def test_pd_only_candidates_are_todays_prefill_counts():
    o = oracle(use_mixed=False)
    assert o.candidate_splits(Split(4, 4)) == [Split(4, 4), Split(3, 5), Split(5, 3), Split(2, 6), Split(6, 2)]
    assert o.candidate_splits(Split(1, 2, 5)) == [Split(1, 2, 5), Split(2, 1, 5)]   # MIXED instances stay


def test_mixed_candidates_move_k_instances_between_any_two_pools():
    o = oracle(use_mixed=True)
    c = o.candidate_splits(Split(4, 4, 0))
    assert c[0] == Split(4, 4, 0) and len(c) == len(set(c))
    assert set(c) == {Split(4, 4, 0), Split(3, 5, 0), Split(5, 3, 0), Split(3, 4, 1), Split(4, 3, 1),
                      Split(2, 6, 0), Split(6, 2, 0), Split(2, 4, 2), Split(4, 2, 2)}
    assert Split(0, 0, 8) in o.candidate_splits(Split(1, 1, 6))
    assert {Split(1, 1, 6)} <= set(o.candidate_splits(Split(0, 0, 8))) <= {Split(0, 0, 8), Split(1, 1, 6)}
    assert all(Split(4, 4).distance(s) <= 2 for s in c)


def test_use_mixed_defaults_to_whether_the_cluster_router_has_the_dispatcher():
    w = generate({"kind": "poisson", "rate": 2.0, "duration_s": 2.0}, seed=1)
    from arrow_rl.evaluation.runner import build_cluster

    p = make_policy("oracle", 4)
    p.controller.bind_cluster(build_cluster(w, EmulatorConfig(preset=PRESET, num_instances=4), p, 0))
    assert p.controller.use_mixed is True
    bare = Policy(p.name, p.mode, p.router.inner, OracleController(), 2, needs_cluster=True)
    bare.controller.bind_cluster(build_cluster(w, EmulatorConfig(preset=PRESET, num_instances=4), bare, 0))
    assert bare.controller.use_mixed is False
    assert OracleController(OracleConfig(use_mixed=False)).use_mixed is False


class LegacyOracle(OracleController):
    """The oracle before MIXED existed (prefill counts, Alg. 3 flips), kept as the reference."""

    def legacy_flips_to(self, views, target_prefill):
        flips, views = [], list(views)
        current = sum(1 for v in views if v.role is P)
        role = P if target_prefill > current else D
        for _ in range(abs(target_prefill - current)):
            chosen = select_flip_instance(views, role, self.profiles)
            if chosen is None:
                break
            flips.append(Flip(chosen, role))
            views = with_role(views, chosen, role)
        return flips

    def legacy_score(self, target_prefill, views):
        clone = self.cluster.clone()
        for f in self.legacy_flips_to(views, target_prefill):
            clone.flip(f.instance_id, f.role)
        w = clone.advance(self.config.lookahead_s)
        misses = (w.finished - w.finished_within_slo) + w.rejected + w.pending_predicted_ttft_misses
        return w.finished_within_slo - self.config.violation_weight * misses

    def act(self, state):
        if state.now - self._last_decision_s < self.config.decision_interval_s - 1e-9:
            return []
        self._last_decision_s = state.now
        views = list(state.instances)
        current = sum(1 for v in views if v.role is P)
        best, best_key = current, None
        pd = sum(1 for v in views if v.role is not M)
        for i, cand in enumerate(self.candidates(current, pd)):
            key = (self.legacy_score(cand, views), -abs(cand - current), -i)
            if best_key is None or key > best_key:
                best, best_key = cand, key
        return self.legacy_flips_to(views, best) if best != current else []


def shifting_workload():
    """Prefill-heavy then decode-heavy, so the oracle moves both ways."""
    a = generate({"kind": "poisson", "rate": 12.0, "duration_s": 10.0,
                  "mix": {"input": {"kind": "fixed", "tokens": 3000}, "output": {"kind": "fixed", "tokens": 20}}}, seed=2)
    b = generate({"kind": "poisson", "rate": 12.0, "duration_s": 10.0,
                  "mix": {"input": {"kind": "fixed", "tokens": 100}, "output": {"kind": "fixed", "tokens": 300}}}, seed=3)
    from arrow_rl.workload.workload import Workload

    return Workload(np.concatenate([a.arrival_s, b.arrival_s + 10.0]), np.concatenate([a.input_tokens, b.input_tokens]),
                    np.concatenate([a.output_tokens, b.output_tokens]))


def test_a_pd_only_oracle_is_bit_identical_to_the_oracle_before_mixed():
    w = shifting_workload()
    cfg = EmulatorConfig(preset=PRESET, num_instances=4, slo_ttft_s=1.0, slo_tpot_s=0.03)
    knobs = dict(decision_interval_s=2.0, lookahead_s=4.0, max_step=2)
    new = make_policy("oracle", 4, oracle_config=OracleConfig(use_mixed=False, **knobs))
    old = make_policy("oracle", 4, oracle_config=OracleConfig(**knobs))
    old.controller = LegacyOracle(OracleConfig(**knobs))
    a, b = run_policy(w, cfg, new), run_policy(w, cfg, old)
    assert [(f.time_s, f.instance_id, f.role) for f in a.flips] == [(f.time_s, f.instance_id, f.role) for f in b.flips]
    assert len(a.flips) >= 1
    key = lambda r: tuple(repr(getattr(r, f)) for f in r.__dataclass_fields__)  # noqa: E731
    assert sorted(map(key, a.records)) == sorted(map(key, b.records))


def test_the_oracle_flips_to_mixed_where_it_serves_more_and_every_request_completes():
    # short prompts, long answers: the lookahead finishes more within SLO on MIXED instances
    w = generate({"kind": "poisson", "rate": 50.0, "duration_s": 15.0,
                  "mix": {"input": {"kind": "lognormal", "mean": 200, "cv": 0.8, "max_tokens": 8000},
                          "output": {"kind": "lognormal", "mean": 600, "cv": 0.8, "max_tokens": 2000}}}, seed=2)
    cfg = EmulatorConfig(preset=PRESET, num_instances=4, slo_ttft_s=1.0, slo_tpot_s=0.03)
    knobs = dict(decision_interval_s=2.0, lookahead_s=4.0, max_step=2)
    r = run_policy(w, cfg, make_policy("oracle", 4, oracle_config=OracleConfig(**knobs)))
    assert any(f.role == M.value for f in r.flips)
    assert len(r.records) == len(w) and all(not x.rejected for x in r.records)
    pd_only = run_policy(w, cfg, make_policy("oracle", 4, oracle_config=OracleConfig(use_mixed=False, **knobs)))
    assert r.attainment >= pd_only.attainment
