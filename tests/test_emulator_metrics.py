"""MetricsWindow contents: window bookkeeping and the Arrow §5.5 loads."""

from __future__ import annotations

import numpy as np
import pytest

from arrow_rl.cluster.base import Role
from arrow_rl.cluster.emulator import EmulatedCluster, EmulatorConfig
from arrow_rl.perf.presets import get_preset
from arrow_rl.workload.workload import Workload

PRESET = "h100-llama3.1-8b-tp1"


def cfg(**kw):
    base = dict(preset=PRESET, num_instances=2, mode="disaggregated", slo_ttft_s=1.0, slo_tpot_s=0.05)
    base.update(kw)
    return EmulatorConfig(**base)


def random_wl(n=300, rate=20.0, seed=0) -> Workload:
    rng = np.random.default_rng(seed)
    return Workload(np.cumsum(rng.exponential(1.0 / rate, n)), rng.integers(1, 3000, n), rng.integers(1, 300, n))


def test_windows_tile_time_and_count_every_arrival_and_finish_once():
    w = random_wl()
    c = EmulatedCluster(w, cfg(num_instances=3))
    windows = []
    while not c.done:
        windows.append(c.advance(0.7))
    assert windows[0].start_s == 0.0
    assert all(a.end_s == pytest.approx(b.start_s) for a, b in zip(windows, windows[1:]))
    assert sum(x.arrivals for x in windows) == len(w)
    assert sum(x.finished for x in windows) == len(w)
    assert sum(x.finished_within_slo for x in windows) == sum(r.meets(c.slo) for r in c.completed())


def test_window_ttft_and_tpot_are_those_of_the_requests_in_it():
    w = Workload(np.array([0.0]), np.array([1000]), np.array([50]))
    c = EmulatedCluster(w, cfg())
    first = c.advance(0.2)
    while not c.done:
        last = c.advance(0.2)
    (r,) = c.completed()
    assert first.prefill.first_tokens == 1 and first.prefill.ttft_mean == pytest.approx(r.ttft_s)
    assert first.prefill.ttft_p90 == pytest.approx(r.ttft_s)
    assert last.decode.finished == 1 and last.decode.tpot_mean == pytest.approx(r.tpot_s)
    assert last.finished_output_tokens_mean == 50


def test_decode_load_is_mean_token_latency_over_slo_tpot():
    # Arrow §5.5: decode load = mean latency of tokens generated in the interval / SLO_TPOT
    w = Workload(np.array([0.0]), np.array([1000]), np.array([400]))
    c = EmulatedCluster(w, cfg())
    c.advance(0.5)
    win = c.advance(1.0)                      # a full window of decode-only iterations on instance 1
    lat = get_preset(PRESET).latency
    alpha, beta = lat.decode_time_coefficients(1)
    s = win.instances[1]
    assert s.itl_mean == pytest.approx(alpha + beta * 1100, rel=0.05)
    assert s.decode_load == pytest.approx(s.itl_mean / 0.05)
    assert win.decode.load == pytest.approx(s.decode_load)   # pool load = mean over the pool (one member)
    assert win.instances[0].decode_load == 0.0              # no decode work, no decode load
    assert s.busy_fraction == pytest.approx(1.0)


def test_prefill_load_is_predicted_prefill_time_of_resident_prompts_over_slo_ttft():
    # Arrow §5.5: prefill load = Σ_{rp∈P_i} T(rp, i) / SLO_TTFT, pool load LP = mean over the pool
    n = 30
    w = Workload(np.zeros(n), np.full(n, 4000), np.full(n, 10))
    c = EmulatedCluster(w, cfg(num_instances=3, num_prefill=2))
    win = c.advance(0.3)
    prof = c.profile(0)
    loads = []
    for i in (0, 1):
        v = c.instances()[i]
        expected = prof.prefill_time_sum(v.num_prefill, v.prefill_tokens, v.prefill_tokens_sq) / 1.0
        assert v.num_prefill > 0
        assert win.instances[i].prefill_load == pytest.approx(expected)
        loads.append(expected)
    assert win.prefill.load == pytest.approx(np.mean(loads))
    assert win.prefill.queued_prefill_tokens == sum(c.instances()[i].prefill_tokens for i in (0, 1))


def test_queued_requests_predicted_to_miss_ttft_are_counted():
    n = 40
    w = Workload(np.zeros(n), np.full(n, 4000), np.full(n, 10))
    tight = EmulatedCluster(w, cfg(slo_ttft_s=0.5, slo_tpot_s=0.1)).advance(0.1)
    loose = EmulatedCluster(w, cfg(slo_ttft_s=1000.0, slo_tpot_s=0.1)).advance(0.1)
    assert tight.pending_predicted_ttft_misses > 30
    assert loose.pending_predicted_ttft_misses == 0


def test_pools_follow_roles_at_window_end():
    c = EmulatedCluster(random_wl(50), cfg(num_instances=4))
    c.advance(1.0)
    c.flip(2, Role.PREFILL)
    win = c.advance(1.0)
    assert (win.prefill.num_instances, win.decode.num_instances) == (3, 1)
    assert [s.role for s in win.instances] == [Role.PREFILL, Role.PREFILL, Role.PREFILL, Role.DECODE]


def test_decode_work_waiting_for_kv_room_queues_on_the_decode_instance():
    import dataclasses
    small = dataclasses.replace(get_preset(PRESET), kv_capacity_tokens=16 * 100)
    w = Workload(np.array([0.0, 0.0]), np.array([900, 900]), np.array([300, 300]))
    c = EmulatedCluster(w, cfg(), router=_Fixed(0, 1), preset=small)
    c.advance(0.5)
    win = c.advance(0.5)
    assert win.instances[1].decode_tokens_generated > 0
    assert c.instances()[1].num_decode == 2          # one decoding, one queued for KV room
    assert win.instances[1].waiting == 1
    c.run_until_done()
    a, b = sorted(c.completed(), key=lambda r: r.request_id)
    # queueing for KV room delays the client's first token (TTFT) by about a's whole decode, not the
    # later tokens
    a_decode = a.finish_s - a.first_token_s
    assert b.ttft_s - b.ttft_prefill_s > 0.9 * a_decode > a.ttft_s - a.ttft_prefill_s


def test_stalled_decode_work_counts_its_stall_as_decode_load():
    # documented choice: no decode iteration in the window but decode work resident
    # → load = (window end − max(window start, when the stall began)) / SLO_TPOT
    w = Workload(np.array([0.0]), np.array([500]), np.array([50]))
    c = EmulatedCluster(w, cfg(flip_delay_s=5.0), router=_Fixed(0, 1))
    c.flip(1, Role.PREFILL)
    c.flip(1, Role.DECODE)                # instance 1 admits nothing until t = 5
    first = c.advance(1.0)
    stall_start = c.records()[0].prefill_done_s   # the decode leg queued when the prompt was done
    assert first.prefill.first_tokens == 0        # the client has seen nothing yet
    assert first.instances[1].decode_tokens_generated == 0
    assert first.instances[1].decode_load == pytest.approx((1.0 - stall_start) / 0.05)
    second = c.advance(1.0)
    assert second.instances[1].decode_load == pytest.approx(1.0 / 0.05)
    assert second.decode.load == pytest.approx(second.instances[1].decode_load)


class _Fixed:
    name = "fixed"

    def __init__(self, p, d):
        self.p, self.d = p, d

    def reset(self, n):
        pass

    def route_prefill(self, req, ctx):
        return self.p

    def route_decode(self, req, p, ctx):
        return self.d
