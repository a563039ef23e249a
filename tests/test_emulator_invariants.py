"""Invariants of the emulator under randomised workloads and clusters (hypothesis)."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arrow_rl.cluster.base import Role
from arrow_rl.cluster.emulator import EmulatedCluster, EmulatorConfig
from arrow_rl.perf.presets import get_preset
from arrow_rl.workload.workload import Workload

PRESET = get_preset("h100-llama3.1-8b-tp1")


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.floats(0.0, 0.3), min_size=n, max_size=n))
    inputs = draw(st.lists(st.integers(1, 3000), min_size=n, max_size=n))
    outputs = draw(st.lists(st.integers(1, 400), min_size=n, max_size=n))
    mode = draw(st.sampled_from(["colocated", "disaggregated"]))
    instances = draw(st.integers(2, 4))
    kv_blocks = draw(st.integers(150, 600))        # small KV: preemptions and transfer queueing
    budget = draw(st.sampled_from([256, 512, 2048]))
    seqs = draw(st.sampled_from([4, 16, 128]))
    flips = draw(st.lists(st.tuples(st.integers(0, 20), st.integers(0, instances - 1),
                                    st.sampled_from([Role.PREFILL, Role.DECODE])), max_size=4))
    delay = draw(st.sampled_from([0.0, 0.0, 0.3]))
    return (Workload(np.cumsum(gaps), np.array(inputs), np.array(outputs)), mode, instances, kv_blocks,
            budget, min(seqs, budget), flips, delay)


def cluster_for(scenario, router=None, exact_stepping: bool = False) -> EmulatedCluster:
    """The emulator a drawn scenario describes (its KV capacity, mode, budgets and flip delay)."""
    workload, mode, instances, kv_blocks, budget, seqs, _, delay = scenario
    preset = dataclasses.replace(PRESET, kv_capacity_tokens=16 * kv_blocks)
    config = EmulatorConfig(preset=PRESET.name, num_instances=instances, mode=mode,
                            max_num_batched_tokens=budget, max_num_seqs=seqs, flip_delay_s=delay,
                            exact_stepping=exact_stepping)
    return EmulatedCluster(workload, config, router=router, preset=preset)


def windows_with_flips(cluster: EmulatedCluster, flips, dt: float):
    """Advance ``cluster`` by ``dt`` until every request ended, applying each scheduled flip
    ``(step, instance, role)`` after its step; yields each step's window."""
    step = 0
    while not cluster.done:
        w = cluster.advance(dt)
        for when, inst, role in flips:
            if when == step:
                cluster.flip(inst, role)
        yield w
        step += 1
        assert step < 100_000


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_request_ends_kv_stays_within_capacity_and_tokens_are_conserved(scenario):
    workload, mode, *_, flips, _ = scenario
    cluster = cluster_for(scenario)
    cluster.audit_every_event = True      # KV ≤ capacity and exact accounting after every event
    first_tokens = decode_tokens = arrivals = finished = 0
    for w in windows_with_flips(cluster, flips, 0.1):
        for s in w.instances:
            assert s.kv_usage <= 1.0
        first_tokens += w.prefill.first_tokens + (0 if mode == "colocated" else w.decode.first_tokens)
        decode_tokens += sum(s.decode_tokens_generated for s in w.instances)
        arrivals += w.arrivals
        finished += w.finished
    records = cluster.completed()
    assert sorted(r.request_id for r in records) == list(range(len(workload)))
    for r in records:
        assert r.finished != r.rejected
        if r.rejected:
            assert r.reject_reason
            continue
        assert r.arrival_s <= r.first_token_s <= r.finish_s
        assert r.ttft_s <= r.e2e_s
    done = [r for r in records if r.finished]
    assert arrivals == len(workload) and finished == len(done)
    assert not any(r.reject_reason.startswith("stuck") for r in records)   # leases time out
    for r in done:
        assert r.arrival_s <= r.prefill_done_s <= r.first_token_s
    # every generated token is accounted for: one client first token + (output − 1) later tokens.
    # Where the first token came from a decode step (after a transfer, or a recompute of a lost
    # one) that step counts in decode_tokens_generated too, and the prefill's token is not sent on.
    assert first_tokens == len(done)
    from_decode_step = sum(1 for r in done if r.first_token_s != r.prefill_done_s)
    assert first_tokens + decode_tokens == sum(r.output_tokens for r in done) + from_decode_step


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_closed_form_runs_agree_with_exact_stepping_on_random_scenarios(scenario):
    *_, flips, _ = scenario
    results = []
    for exact in (False, True):
        cluster = cluster_for(scenario, exact_stepping=exact)
        for _ in windows_with_flips(cluster, flips, 0.1):
            pass
        results.append(sorted(cluster.completed(), key=lambda r: r.request_id))
    for a, b in zip(*results):
        assert (a.rejected, a.prefill_instance, a.decode_instance, a.preemptions) == \
               (b.rejected, b.prefill_instance, b.decode_instance, b.preemptions)
        if a.finished:
            assert abs(a.first_token_s - b.first_token_s) < 1e-9 and abs(a.finish_s - b.finish_s) < 1e-9


class _ViewCheckingRouter:
    """Least-loaded routing that, at every decision, compares the (cached) views the cluster hands
    out with views rebuilt from scratch: a stale cache would misroute silently."""

    name = "view-checking"

    def __init__(self) -> None:
        from arrow_rl.routing import LeastLoadedRouter

        self.inner = LeastLoadedRouter()
        self.checks = 0

    def reset(self, n):
        pass

    def _check(self, ctx):
        from arrow_rl.cluster.emulator.decode_run import iterations_done_by
        from arrow_rl.cluster.emulator.instance import DECODE_RUN
        from arrow_rl.cluster.emulator.views import fresh_view

        t = ctx.now
        for I, v in zip(ctx._insts, ctx.instances()):
            k = iterations_done_by(I, t) if I.plan == DECODE_RUN and t > I.plan_start else 0
            assert v == fresh_view(I, I.decode_iterations + k, t >= I.blocked_until)
        self.checks += 1

    def route_prefill(self, request, ctx):
        self._check(ctx)
        return self.inner.route_prefill(request, ctx)

    def route_decode(self, request, prefill_instance, ctx):
        self._check(ctx)
        return self.inner.route_decode(request, prefill_instance, ctx)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_routers_always_see_up_to_date_instance_views(scenario):
    workload, *_, flips, _ = scenario
    router = _ViewCheckingRouter()
    cluster = cluster_for(scenario, router=router)
    for _ in windows_with_flips(cluster, flips, 0.05):
        router._check(cluster)
    assert router.checks >= len(workload)


@st.composite
def prefixed_scenarios(draw):
    """A drawn scenario whose requests share system prompts (a few groups, some with none)."""
    scenario = draw(scenarios())
    workload = scenario[0]
    n = len(workload)
    groups = np.array(draw(st.lists(st.integers(-1, 2), min_size=n, max_size=n)))
    share = draw(st.floats(0.0, 1.0))
    prefix = np.minimum((share * workload.input_tokens).astype(int), workload.input_tokens)
    return (workload.with_shared_prefixes(groups, prefix),) + scenario[1:]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefixed_scenarios())
def test_with_prefix_caching_every_request_ends_and_the_cache_accounting_stays_exact(scenario):
    workload, mode, *_, flips, _ = scenario
    cluster = cluster_for(scenario)
    cluster.audit_every_event = True      # reference counts, shared blocks and KV ≤ capacity
    first_tokens = decode_tokens = hits = 0
    for w in windows_with_flips(cluster, flips, 0.1):
        first_tokens += w.prefill.first_tokens + (0 if mode == "colocated" else w.decode.first_tokens)
        decode_tokens += sum(s.decode_tokens_generated for s in w.instances)
        hits += w.prefix_cache_hit_tokens
    records = cluster.completed()
    assert sorted(r.request_id for r in records) == list(range(len(workload)))
    done = [r for r in records if r.finished]
    assert all(r.finished or not r.reject_reason.startswith("stuck") for r in records)
    assert hits == cluster.prefix_hit_tokens
    assert all(r.cached_tokens < r.input_tokens for r in records)
    from_decode_step = sum(1 for r in done if r.first_token_s != r.prefill_done_s)
    assert first_tokens + decode_tokens == sum(r.output_tokens for r in done) + from_decode_step
