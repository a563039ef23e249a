"""Automatic prefix caching (vLLM v1, on by default): per-instance block-hash cache, LRU eviction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from arrow_rl.cluster.emulator import EmulatedCluster, EmulatorConfig
from arrow_rl.perf.presets import get_preset
from arrow_rl.workload.workload import Workload

PRESET = "h100-llama3.1-8b-tp1"


class Fixed:
    name = "fixed"

    def __init__(self, p, d=None):
        self.p, self.d = p, d

    def reset(self, n):
        pass

    def route_prefill(self, request, ctx):
        return self.p

    def route_decode(self, request, prefill_instance, ctx):
        return prefill_instance if self.d is None else self.d


def run(w, router=None, preset=None, audit=True, **kw):
    base = dict(preset=PRESET, num_instances=2, mode="colocated")
    base.update(kw)
    c = EmulatedCluster(w, EmulatorConfig(**base), router=router or Fixed(0), preset=preset)
    c.audit_every_event = audit
    c.run_until_done()
    return c, sorted(c.completed(), key=lambda r: r.request_id)


def grouped(arrivals, inputs, outputs, groups, prefix_tokens) -> Workload:
    w = Workload(np.asarray(arrivals, float), np.asarray(inputs), np.asarray(outputs))
    return w.with_shared_prefixes(np.asarray(groups), prefix_tokens)


def test_a_later_request_of_the_same_group_skips_the_shared_full_blocks():
    # 100-token system prompt: 6 full 16-token blocks (96 tokens) can hit, the partial block cannot
    w = grouped([0.0, 5.0], [570, 570], [10, 10], [3, 3], 100)
    c, (a, b) = run(w)
    assert (a.cached_tokens, b.cached_tokens) == (0, 96)
    lat = get_preset(PRESET).latency
    assert a.ttft_prefill_s == pytest.approx(lat.frontend_s + lat.iteration_time(570, 570 * 285, 0, 0), rel=1e-12)
    c_ = 570 - 96     # computed tokens attend over the cached ones too
    assert b.ttft_prefill_s == pytest.approx(lat.frontend_s + lat.iteration_time(c_, c_ * (96 + c_ / 2), 0, 0),
                                             rel=1e-12)
    assert c.prefix_cache_hit_rate == pytest.approx(96 / 1140)


def test_other_groups_do_not_hit():
    w = grouped([0.0, 5.0], [570, 570], [10, 10], [3, 4], 100)
    _, (a, b) = run(w)
    assert a.cached_tokens == b.cached_tokens == 0


def test_prefix_caching_off_or_no_prefixes_gives_the_plain_records():
    w = grouped([0.0, 0.01, 5.0], [570, 300, 570], [10, 50, 10], [3, 3, 3], 100)
    plain = Workload(w.arrival_s, w.input_tokens, w.output_tokens)
    _, off = run(w, enable_prefix_caching=False)
    _, none = run(plain)
    assert off == none
    assert all(r.cached_tokens == 0 for r in off)


def test_a_fully_cached_prompt_still_computes_its_last_token():
    # identical 32-token prompts: vLLM caps a hit at prompt − 1 tokens, so 1 block of 2 hits
    w = grouped([0.0, 5.0], [32, 32], [4, 4], [0, 0], 32)
    _, (a, b) = run(w)
    assert b.cached_tokens == 16


def test_concurrent_requests_share_prefix_blocks_once_in_the_kv_count():
    n = 20
    w = grouped(np.zeros(n), np.full(n, 1100), np.full(n, 200), np.zeros(n, int), 1024)
    c = EmulatedCluster(w, EmulatorConfig(preset=PRESET, num_instances=1 + 1, mode="colocated"), router=Fixed(0))
    c.audit_every_event = True
    c.advance(1.0)
    shared = c.instances()[0].kv_used_tokens
    plain = EmulatedCluster(Workload(w.arrival_s, w.input_tokens, w.output_tokens),
                            EmulatorConfig(preset=PRESET, num_instances=2, mode="colocated"), router=Fixed(0))
    plain.advance(1.0)
    # 64 blocks of the shared prompt are held once instead of 20 times
    assert plain.instances()[0].kv_used_tokens - shared >= (n - 1) * 1024 * 0.9
    c.run_until_done()
    assert all(r.finished for r in c.completed())


def _eviction_workload(filler_requests: int) -> Workload:
    # A (group 0) finishes, then unique fillers churn through the free queue, then B (group 0)
    arr = [0.0] + [1.0 + 0.5 * k for k in range(filler_requests)] + [1.0 + 0.5 * filler_requests + 5.0]
    inp = [1000] + [1000] * filler_requests + [1000]
    out = [2] + [2] * filler_requests + [2]
    groups = [0] + [-1] * filler_requests + [0]
    return grouped(arr, inp, out, groups, 960)


def test_free_cached_blocks_are_evicted_lru_once_allocations_reach_them():
    # 200-block KV: A's 60 cached blocks join the free queue's tail behind 137 never-used blocks
    # and A's 3 private ones; each filler pops 63 blocks from the head, so one filler leaves them
    # all and four fillers have popped them all
    small = dataclasses.replace(get_preset(PRESET), kv_capacity_tokens=16 * 200)
    _, kept = run(_eviction_workload(1), preset=small)
    _, evicted = run(_eviction_workload(4), preset=small)
    assert kept[-1].cached_tokens == 960
    assert evicted[-1].cached_tokens == 0


def test_in_disaggregated_mode_both_caches_hit_and_the_transfer_moves_only_what_the_decode_side_lacks():
    # A's pulled KV is cached on the decode instance when it lands (vLLM
    # ``_update_waiting_for_remote_kv``), so B's pull finds its shared 512 tokens there and moves
    # the other 58 (the NIXL connector pulls the prompt past the local prefix-cache hit)
    p = get_preset(PRESET)
    w = grouped([0.0, 5.0], [570, 570], [3, 3], [1, 1], 512)
    c, (a, b) = run(w, router=Fixed(0, 1), mode="disaggregated", num_instances=2, kv_link_sharing=False)
    assert b.cached_tokens == 512 and b.prefill_instance == 0
    alpha, beta = p.latency.decode_time_coefficients(1)
    first_step = alpha + beta * 570
    assert a.first_token_s - a.prefill_done_s == pytest.approx(p.kv_transfer_time(570) + first_step, rel=1e-12)
    assert b.first_token_s - b.prefill_done_s == pytest.approx(p.kv_transfer_time(58) + first_step, rel=1e-12)
    # the hit counters see both lookups on each side: A misses twice, B hits 512 twice
    assert c.prefix_hit_tokens == 2 * 512


def test_windows_report_the_hit_rate_and_add_up_to_the_run():
    w = grouped(np.arange(40) * 0.1, np.full(40, 600), np.full(40, 20), np.arange(40) % 4, 200)
    c = EmulatedCluster(w, EmulatorConfig(preset=PRESET, num_instances=4, mode="disaggregated"))
    hits = queries = 0
    while not c.done:
        win = c.advance(0.5)
        hits += win.prefix_cache_hit_tokens
        queries += win.prefix_cache_query_tokens
        assert 0.0 <= win.prefix_cache_hit_rate <= 1.0
    assert (hits, queries) == (c.prefix_hit_tokens, c.prefix_query_tokens)
    assert hits > 0


def test_clone_with_prefix_caches_evolves_identically_and_independently():
    w = grouped(np.arange(60) * 0.05, np.full(60, 900), np.full(60, 40), np.arange(60) % 3, 512)
    c = EmulatedCluster(w, EmulatorConfig(preset=PRESET, num_instances=4, mode="disaggregated"))
    c.advance(1.0)
    twin = c.clone()
    c.run_until_done()
    twin.run_until_done()
    assert sorted(c.completed(), key=lambda r: r.request_id) == sorted(twin.completed(), key=lambda r: r.request_id)
    assert c.prefix_hit_tokens == twin.prefix_hit_tokens > 0
