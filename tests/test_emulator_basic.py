"""The emulator's request life cycle, routing, flips, rejection, cloning and determinism."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from arrow_rl.cluster.base import Mode, Role
from arrow_rl.cluster.emulator import EmulatedCluster, EmulatorConfig
from arrow_rl.perf.presets import get_preset
from arrow_rl.routing import LeastLoadedRouter, RoundRobinRouter, make_router
from arrow_rl.workload.workload import Workload

PRESET = "h100-llama3.1-8b-tp1"


def wl(rows) -> Workload:
    a, i, o = zip(*rows)
    return Workload(np.array(a, float), np.array(i), np.array(o))


def random_wl(n=300, rate=20.0, seed=0, max_in=4000, max_out=300) -> Workload:
    rng = np.random.default_rng(seed)
    arr = np.cumsum(rng.exponential(1.0 / rate, n))
    return Workload(arr, rng.integers(1, max_in, n), rng.integers(1, max_out, n))


def cfg(**kw) -> EmulatorConfig:
    base = dict(preset=PRESET, num_instances=2, mode="disaggregated")
    base.update(kw)
    return EmulatorConfig(**base)


class FixedRouter:
    """Sends every prefill leg to ``p`` and every decode leg to ``d`` (None: stay put)."""

    name = "fixed"

    def __init__(self, p: int, d: int | None) -> None:
        self.p, self.d = p, d

    def reset(self, num_instances: int) -> None:
        pass

    def route_prefill(self, request, ctx) -> int:
        return self.p

    def route_decode(self, request, prefill_instance, ctx) -> int:
        return prefill_instance if self.d is None else self.d


def run(workload, config, router=None, **kw) -> tuple[EmulatedCluster, list]:
    c = EmulatedCluster(workload, config, router=router, **kw)
    c.run_until_done()
    return c, sorted(c.completed(), key=lambda r: r.request_id)


def test_lone_request_ttft_is_its_prefill_iteration_and_decode_sums_iterations():
    lat = get_preset(PRESET).latency
    c, (r,) = run(wl([(0.0, 1000, 10)]), cfg(num_instances=1, mode="colocated"))
    # the API server's per-request time (frontend_s) comes first, then the prefill iteration
    assert r.ttft_s == pytest.approx(lat.frontend_s + lat.iteration_time(1000, 1000 * 500.0, 0, 0), rel=1e-12)
    # 9 decode iterations; iteration j attends over 1001 + j tokens (input + generated)
    alpha, beta = lat.decode_time_coefficients(1)
    decode = sum(alpha + beta * (1001 + j) for j in range(9))
    assert r.finish_s - r.first_token_s == pytest.approx(decode, rel=1e-12)
    assert r.tpot_s == pytest.approx(decode / 9, rel=1e-12)


def test_long_prompt_is_prefilled_in_chunks_of_max_num_batched_tokens():
    lat = get_preset(PRESET).latency
    _, (r,) = run(wl([(0.0, 5000, 1)]), cfg(num_instances=1, mode="colocated", max_num_batched_tokens=2048))
    chunks = [(2048, 0), (2048, 2048), (904, 4096)]   # (new tokens, context already computed)
    expected = lat.frontend_s + sum(lat.iteration_time(c, c * (k + c / 2), 0, 0) for c, k in chunks)
    assert r.ttft_s == pytest.approx(expected, rel=1e-12)
    assert r.finish_s == r.first_token_s   # one output token: done at the first token


def test_same_workload_config_router_and_seed_give_identical_records():
    w = random_wl()
    _, a = run(w, cfg(num_instances=3), router=LeastLoadedRouter(), seed=7)
    _, b = run(w, cfg(num_instances=3), router=LeastLoadedRouter(), seed=7)
    assert a == b


def test_client_ttft_ends_with_the_decode_instances_first_step_after_the_transfer():
    # the prefill instance computes the prompt (prefill_done_s, Arrow §4.2's TTFT); the client's
    # first token comes from the decode instance, whose first step recomputes the last prompt
    # token (vLLM v1 _update_waiting_for_remote_kv): it then emits all 5 output tokens itself
    p = get_preset(PRESET)
    lat = p.latency
    c, (r,) = run(wl([(0.0, 3000, 5)]), cfg(max_num_batched_tokens=2048), router=FixedRouter(0, 1))
    prefill = lat.frontend_s + sum(lat.iteration_time(ch, ch * (k + ch / 2), 0, 0)
                                   for ch, k in [(2048, 0), (952, 2048)])
    assert r.ttft_prefill_s == pytest.approx(prefill, rel=1e-12)
    alpha, beta = lat.decode_time_coefficients(1)
    steps = [alpha + beta * (3000 + j) for j in range(5)]   # context: 3000, 3001, ... tokens
    assert r.first_token_s - r.prefill_done_s == pytest.approx(p.kv_transfer_time(3000) + steps[0], rel=1e-12)
    assert r.finish_s - r.first_token_s == pytest.approx(sum(steps[1:]), rel=1e-12)
    assert r.tpot_s == pytest.approx(sum(steps[1:]) / 4, rel=1e-12)
    assert (r.prefill_instance, r.decode_instance) == (0, 1)
    assert c.num_transfers == 1


def test_decoding_in_place_or_colocated_the_prefills_token_is_the_clients_first():
    for mode, router in (("disaggregated", FixedRouter(0, None)), ("colocated", None)):
        _, (r,) = run(wl([(0.0, 3000, 5)]), cfg(mode=mode), router=router)
        assert r.first_token_s == r.prefill_done_s


def test_kv_transfer_happens_only_when_the_decode_instance_differs():
    w = random_wl(100)
    c_same, recs = run(w, cfg(), router=FixedRouter(0, None))
    assert c_same.num_transfers == 0
    assert all(r.decode_instance in (-1, r.prefill_instance) for r in recs)
    c_other, recs = run(w, cfg(), router=FixedRouter(0, 1))
    assert c_other.num_transfers == sum(1 for r in recs if r.output_tokens > 1)


def test_colocated_requests_never_move():
    c, recs = run(random_wl(200), cfg(num_instances=3, mode="colocated"))
    assert c.num_transfers == 0
    assert all(r.decode_instance in (-1, r.prefill_instance) for r in recs)
    assert len({r.prefill_instance for r in recs}) == 3   # least-loaded spreads the work


def test_requests_that_can_never_fit_are_rejected_with_a_reason():
    small = dataclasses.replace(get_preset(PRESET), kv_capacity_tokens=4096)
    w = wl([(0.0, 100, 10), (0.1, 200_000, 10), (0.2, 4000, 200), (0.3, 50, 5)])
    _, recs = run(w, cfg(num_instances=1, mode="colocated"), preset=small)
    assert [r.rejected for r in recs] == [False, True, True, False]
    assert "max_model_len" in recs[1].reject_reason
    assert "KV capacity" in recs[2].reject_reason
    assert all(r.finished for r in recs if not r.rejected)


def test_flip_to_the_current_role_is_a_no_op_and_unknown_ids_raise():
    c = EmulatedCluster(random_wl(10), cfg(num_instances=4))
    c.flip(0, Role.PREFILL)
    assert c.flips == []
    with pytest.raises(ValueError, match="unknown instance id"):
        c.flip(4, Role.DECODE)
    with pytest.raises(ValueError, match="unknown instance id"):
        c.flip(-1, Role.DECODE)


def test_flips_mid_run_keep_every_request():
    w = random_wl(400, rate=30)
    c = EmulatedCluster(w, cfg(num_instances=4))
    k = 0
    while not c.done:
        c.advance(0.25)
        k += 1
        if k == 8:
            c.flip(2, Role.PREFILL)
        if k == 16:
            c.flip(0, Role.DECODE)
            c.flip(3, Role.PREFILL)
    recs = c.completed()
    assert len(recs) == len(w) and all(r.finished for r in recs)


def test_resident_decode_work_finishes_in_place_after_a_flip():
    # Arrow §5.2: a flip is a routing label change; nothing migrates
    w = wl([(0.0, 500, 400), (1.0, 500, 50)])
    c = EmulatedCluster(w, cfg(num_instances=3, num_prefill=1))
    c.advance(0.5)                       # request 0 is decoding on instance 1 (least decode tokens)
    assert c.instance(1).num_decode == 1
    c.flip(1, Role.PREFILL)
    c.run_until_done()
    r0, r1 = sorted(c.completed(), key=lambda r: r.request_id)
    assert r0.decode_instance == 1 and r0.finished
    assert r1.decode_instance == 2       # new decode legs avoid the flipped instance


def test_flip_delay_keeps_an_instance_from_taking_new_work():
    w = wl([(1.0, 100, 5)])
    c = EmulatedCluster(w, cfg(num_instances=2, flip_delay_s=2.0), router=FixedRouter(1, 1))
    c.flip(1, Role.PREFILL)              # at t=0: instance 1 admits nothing before t=2
    assert not c.instance(1).healthy
    c.run_until_done()
    (r,) = c.completed()
    assert r.first_token_s > 2.0
    assert c.instance(1).healthy


def test_clone_is_independent_and_evolves_identically():
    w = random_wl(300, rate=40)
    c = EmulatedCluster(w, cfg(num_instances=3))
    for _ in range(10):
        c.advance(0.5)
    twin = c.clone()
    twin.flip(0, Role.DECODE)            # must not leak into the original
    assert c.instance(0).role is Role.PREFILL
    twin2 = c.clone()
    c.run_until_done()
    twin2.run_until_done()
    assert sorted(c.completed(), key=lambda r: r.request_id) == sorted(twin2.completed(), key=lambda r: r.request_id)
    twin.run_until_done()
    assert len(twin.completed()) == len(w)


def test_advance_in_small_steps_matches_one_long_run():
    w = random_wl(200, rate=30)
    _, whole = run(w, cfg(num_instances=3))
    c = EmulatedCluster(w, cfg(num_instances=3))
    while not c.done:
        c.advance(0.013)
    stepped = sorted(c.completed(), key=lambda r: r.request_id)
    assert [(r.prefill_instance, r.decode_instance) for r in stepped] == \
           [(r.prefill_instance, r.decode_instance) for r in whole]
    assert np.allclose([r.finish_s for r in stepped], [r.finish_s for r in whole], rtol=0, atol=1e-9)


@pytest.mark.parametrize("mode", ["colocated", "disaggregated"])
def test_closed_form_decode_runs_agree_with_exact_stepping(mode):
    small = dataclasses.replace(get_preset(PRESET), kv_capacity_tokens=16 * 500)   # KV pressure too
    w = random_wl(250, rate=15, max_in=2500, max_out=400, seed=3)
    fast_c, fast = run(w, cfg(num_instances=3, mode=mode), preset=small)
    slow_c, slow = run(w, cfg(num_instances=3, mode=mode, exact_stepping=True), preset=small)
    assert fast_c.num_preemptions == slow_c.num_preemptions > 0
    for a, b in zip(fast, slow):
        assert (a.prefill_instance, a.decode_instance, a.preemptions) == \
               (b.prefill_instance, b.decode_instance, b.preemptions)
        assert a.first_token_s == pytest.approx(b.first_token_s, abs=1e-9)
        assert a.finish_s == pytest.approx(b.finish_s, abs=1e-9)


def test_preemption_under_kv_pressure_and_every_request_still_finishes():
    small = dataclasses.replace(get_preset(PRESET), kv_capacity_tokens=16 * 300)
    w = random_wl(150, rate=50, max_in=1500, max_out=600, seed=5)
    c = EmulatedCluster(w, cfg(num_instances=1, mode="colocated"), preset=small)
    c.audit_every_event = True
    c.run_until_done()
    recs = c.completed()
    assert c.num_preemptions > 0 and sum(r.preemptions for r in recs) == c.num_preemptions
    assert all(r.finished for r in recs)


def test_max_num_seqs_bounds_the_running_batch():
    w = Workload(np.zeros(50), np.full(50, 20), np.full(50, 100))
    c = EmulatedCluster(w, cfg(num_instances=1, mode="colocated", max_num_seqs=8))
    c.advance(0.05)
    (v,) = c.instances()
    assert c._insts[0].running.__len__() == 8
    assert v.num_prefill == 42            # the rest wait for a slot
    c.run_until_done()
    assert all(r.finished for r in c.completed())


def test_routers_by_name_and_round_robin_alternates():
    assert isinstance(make_router("least-loaded"), LeastLoadedRouter)
    with pytest.raises(ValueError, match="valid routers"):
        make_router("nope")
    _, recs = run(wl([(0.0, 10, 2), (0.001, 10, 2), (0.002, 10, 2), (0.003, 10, 2)]),
                  cfg(num_instances=4), router=RoundRobinRouter())
    assert [r.prefill_instance for r in recs] == [0, 1, 0, 1]
    assert [r.decode_instance for r in recs] == [2, 3, 2, 3]


def test_router_returning_a_bad_instance_is_a_clear_error():
    with pytest.raises(ValueError, match="route_prefill returned 9"):
        run(wl([(0.0, 10, 2)]), cfg(), router=FixedRouter(9, None))


def test_config_validation_names_the_problem(tmp_path):
    with pytest.raises(ValueError, match="num_prefill"):
        cfg(num_instances=4, num_prefill=4)
    with pytest.raises(ValueError, match="max_num_seqs"):
        cfg(max_num_seqs=4096, max_num_batched_tokens=2048)
    bad = tmp_path / "c.yaml"
    bad.write_text("preset: h100-llama3.1-8b-tp1\nnum_instances: -3\n")
    with pytest.raises(ValueError, match=r"c\.yaml: num_instances"):
        EmulatorConfig.from_yaml(bad)
    bad.write_text("preset: h100-llama3.1-8b-tp1\nnum_instances: 2\nmax_num_seq: 3\n")
    with pytest.raises(ValueError, match="max_num_seq"):
        EmulatorConfig.from_yaml(bad)
    good = tmp_path / "g.yaml"
    good.write_text("cluster:\n  preset: h100-llama3.1-8b-tp1\n  num_instances: 4\n  mode: colocated\n")
    assert EmulatorConfig.from_yaml(good).mode is Mode.COLOCATED


def test_default_slo_is_documented_and_info_describes_the_cluster():
    c = EmulatedCluster(random_wl(5), cfg(num_instances=4))
    assert (c.info.slo.ttft_s, c.info.slo.tpot_s) == (10.0, 0.125)
    assert c.info.initial_roles == (Role.PREFILL, Role.PREFILL, Role.DECODE, Role.DECODE)
    assert not math.isnan(c.profile(0).prefill_time(100))


def test_shipped_cluster_configs_load():
    from pathlib import Path

    paths = sorted(Path(__file__).resolve().parents[1].joinpath("configs", "clusters").glob("*.yaml"))
    assert paths
    for path in paths:
        assert EmulatorConfig.from_yaml(path).num_instances >= 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["colocated", "disaggregated"])
def test_full_azure_conversation_trace_on_eight_instances(mode):
    from arrow_rl.workload import load_workload

    w = load_workload("azure-conv")
    c, recs = run(w, cfg(num_instances=8, mode=mode, num_prefill=4 if mode == "disaggregated" else None))
    assert len(recs) == len(w) == 19366 and all(r.finished for r in recs)


class Crossed:
    """Prefill legs alternate between instances 0 and 1; each decode leg goes to the other one."""

    name = "crossed"

    def reset(self, n):
        pass

    def route_prefill(self, request, ctx):
        return request.request_id % 2

    def route_decode(self, request, prefill_instance, ctx):
        return 1 - prefill_instance


def test_a_kv_transfer_cycle_is_broken_by_the_prefill_sides_lease_timeout():
    # instances 0 and 1 each hold a prompt's KV for a transfer to the other and neither has room
    # for it: vLLM frees a lease after VLLM_NIXL_ABORT_REQUEST_TIMEOUT, the decode side recomputes
    small = dataclasses.replace(get_preset(PRESET), kv_capacity_tokens=16 * 100)
    w = wl([(0.0, 1500, 10), (0.0, 1500, 10)])
    c, recs = run(w, cfg(kv_lease_timeout_s=5.0), router=Crossed(), preset=small)
    assert c.done and all(r.finished for r in recs)
    assert c.num_lease_expiries == 1           # the first expiry frees room for the other pull
    recomputed, pulled = recs
    assert 5.0 < recomputed.finish_s and recomputed.decode_instance == 1
    assert c.num_transfers == 1 and pulled.decode_instance == 0
    c.audit()


def test_the_lease_timeout_defaults_to_vllms_480_s():
    assert cfg().kv_lease_timeout_s == 480.0


def test_a_scenario_that_used_to_wedge_by_self_preemption_behind_transfers_finishes():
    # found by hypothesis: all instances labelled PREFILL, tiny KV; instances 1 and 3 each held
    # KV for transfers to the other while a prompt on 1 preempted itself forever (no progress)
    # until the watchdog rejected everything. Pulls no longer take max_num_seqs slots, and leases
    # time out, so nothing is stuck any more.
    from arrow_rl.cluster.emulator.cluster import STUCK_AFTER_S

    small = dataclasses.replace(get_preset(PRESET), kv_capacity_tokens=16 * 251)
    arr = [0.0, 0.165, 0.41, 0.411, 0.4110003, 0.607, 0.907, 0.911, 1.188, 1.243, 1.524, 1.5265, 1.5265,
           1.546, 1.716, 1.938, 2.055, 2.156, 2.437, 2.569, 2.570, 2.575, 2.659, 2.910, 3.015, 3.037,
           3.289, 3.487, 3.760, 3.813, 4.088]
    inp = [3000, 3000, 313, 59, 393, 2504, 162, 81, 2, 1, 1214, 1425, 410, 400, 914, 197, 123, 176, 426,
           2536, 117, 600, 366, 401, 422, 331, 2509, 2169, 607, 2355, 495]
    out = [76, 340, 31, 33, 268, 83, 33, 274, 184, 146, 293, 155, 86, 162, 360, 43, 42, 279, 302, 256,
           301, 326, 111, 256, 275, 256, 393, 164, 18, 18, 251]
    w = Workload(np.array(arr), np.array(inp), np.array(out))
    c = EmulatedCluster(w, cfg(num_instances=4, max_num_batched_tokens=512, max_num_seqs=16), preset=small)
    step = 0
    while not c.done:
        c.advance(0.1)
        if step == 1:
            c.flip(3, Role.PREFILL)
        if step == 17:
            c.flip(2, Role.PREFILL)
        step += 1
        assert c.now < 2 * STUCK_AFTER_S
    recs = c.completed()
    assert len(recs) == len(w)
    assert all(r.finished for r in recs)
    c.audit()
