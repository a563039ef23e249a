"""The MIXED pool in the live router (issue 12), against fake vLLM instances: plain requests served
whole, the split policy (the emulator's ``MixedDispatcher``), flips to and from MIXED, the
serving-path rule, ``GET /roles``, and ``deploy`` with Arrow and a moves checkpoint."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from arrow_rl.cluster.base import Flip, Role
from arrow_rl.cluster.live.cluster import LiveCluster
from arrow_rl.cluster.live.config import load_config_file
from arrow_rl.cluster.live.fake_vllm import FakeConfig, expected_tokens
from arrow_rl.cluster.live.splits import flips_to_roles
from arrow_rl.serving.config import RouterConfig
from arrow_rl.serving.deploy import run_control_loop
from live_fixtures import (AUTH, MOVE_D_TO_M, MOVE_M_TO_D, TOKEN, build_moves_checkpoint, checkpoint_then_arrow,
                           completion, live_rig, read_stream)

PDM = ["prefill", "decode", "mixed"]
ALL_MIXED = {"mixed_policy": "fraction", "fraction": 1.0}


def _paths(rig) -> list[tuple[str, int, int]]:
    return [(e["path"], e["prefill_instance"], e["decode_instance"])
            for e in rig.router.state.events_after(0)[0] if e["kind"] == "finish"]


def _idle(rig, timeout_s: float = 5.0) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if all(s.num_prefill == s.num_decode == s.prefill_tokens == s.decode_tokens == 0
               for s in rig.router.state.instances):
            return True
        time.sleep(0.02)
    return False


# ---------------------------------------------------------------------------- the plain path ----
@pytest.mark.parametrize("stream", [True, False])
def test_a_mixed_instance_serves_a_completion_whole_with_no_handoff(stream):
    with live_rig(roles=PDM, mixed=ALL_MIXED) as rig, rig.client() as c:
        body = completion(prompt_len=120, max_tokens=5, stream=stream)
        if stream:
            with c.stream("POST", "/v1/completions", json=body) as r:
                assert r.status_code == 200
                tokens, _ = read_stream(r)
        else:
            out = c.post("/v1/completions", json=body)
            assert out.status_code == 200
            tokens = out.json()["choices"][0]["token_ids"]
            assert "kv_transfer_params" not in out.json()
        assert tokens == expected_tokens(body["prompt"], 5)
        seen = rig.fakes[2].requests_seen[-1]
        assert "kv_transfer_params" not in seen and seen["max_tokens"] == 5   # the client's body, unchanged
        assert not rig.fakes[0].requests_seen and not rig.fakes[1].requests_seen
        assert _paths(rig) == [("mixed", 2, 2)]
        assert _idle(rig)
        assert rig.router.state.instances[2].prefill_tokens_done == 120   # it computed the prompt


@pytest.mark.parametrize("stream", [True, False])
def test_a_mixed_instance_serves_chat_whole_with_no_handoff(stream):
    with live_rig(roles=PDM, mixed=ALL_MIXED) as rig, rig.client() as c:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hello there " * 10}],
                "max_completion_tokens": 4, "stream": stream}
        if stream:
            with c.stream("POST", "/v1/chat/completions", json={**body, "return_token_ids": True}) as r:
                assert r.status_code == 200
                tokens, _ = read_stream(r)
            assert len(tokens) == 4
        else:
            out = c.post("/v1/chat/completions", json=body)
            assert out.status_code == 200 and out.json()["usage"]["completion_tokens"] == 4
        assert "kv_transfer_params" not in rig.fakes[2].requests_seen[-1]
        assert not rig.fakes[0].requests_seen and not rig.fakes[1].requests_seen
        assert [p for p, _, _ in _paths(rig)] == ["mixed"]
        assert _idle(rig)


def test_a_mixed_prompt_is_queued_prefill_work_until_its_first_token():
    # What the dispatcher's cost rule prices on a MIXED instance: Σ T(rp) of its prompts in flight.
    cfg = [FakeConfig(), FakeConfig(), FakeConfig(prefill_base_s=0.4)]
    with live_rig(roles=PDM, configs=cfg, mixed=ALL_MIXED) as rig:
        m = rig.router.state.instances[2]
        seen: list[tuple[int, int]] = []

        def one() -> None:
            with rig.client() as c, c.stream("POST", "/v1/completions", json=completion(prompt_len=300)) as r:
                read_stream(r)

        t = threading.Thread(target=one)
        t.start()
        deadline = time.time() + 5
        while not m.num_prefill and time.time() < deadline:
            time.sleep(0.01)
        seen.append((m.prefill_tokens, m.num_decode))
        t.join(10)
        assert seen == [(300, 0)]
        assert _idle(rig)


def test_a_failed_mixed_request_is_retried_plain_on_another_mixed_instance():
    cfg = [FakeConfig(), FakeConfig(), FakeConfig(fail_decode_before_stream=1), FakeConfig()]
    with live_rig(roles=["prefill", "decode", "mixed", "mixed"], configs=cfg, mixed=ALL_MIXED) as rig, \
            rig.client() as c:
        body = completion(max_tokens=3)
        with c.stream("POST", "/v1/completions", json=body) as r:
            tokens, _ = read_stream(r)
        assert tokens == expected_tokens(body["prompt"], 3)
        assert _paths(rig) == [("retry", 2, 3)]
        assert _idle(rig)


# ------------------------------------------------------------------------- the split policy ----
def test_without_mixed_instances_the_dispatcher_only_forwards():
    with live_rig(roles=["prefill", "decode"], mixed=ALL_MIXED) as rig, rig.client() as c:
        for k in range(3):
            c.post("/v1/completions", json=completion(stream=False, seed=k)).raise_for_status()
        d = rig.router.dispatcher
        assert (d.decisions, d.sent_mixed) == (0, 0)
        assert [p for p, _, _ in _paths(rig)] == ["disaggregated"] * 3


def test_fraction_policy_sends_the_documented_share_mixed():
    # fraction: after k decided requests, ceil(k · fraction) went MIXED (arrow_rl/arrow/mixed.py)
    with live_rig(roles=PDM, mixed={"mixed_policy": "fraction", "fraction": 0.5}) as rig, rig.client() as c:
        for k in range(4):
            c.post("/v1/completions", json=completion(stream=False, seed=k)).raise_for_status()
        assert [p for p, _, _ in _paths(rig)] == ["mixed", "disaggregated", "mixed", "disaggregated"]
        st = c.get("/state", headers=AUTH).json()["mixed"]
        assert (st["decisions"], st["chosen_mixed"], st["sent_mixed"]) == (4, 2, 2)
        assert st["config"]["mixed_policy"] == "fraction"


def test_prompt_threshold_policy_sends_short_prompts_mixed():
    mixed = {"mixed_policy": "prompt-threshold", "prompt_threshold_tokens": 100}
    with live_rig(roles=PDM, mixed=mixed) as rig, rig.client() as c:
        for n in (50, 300, 99, 100):
            c.post("/v1/completions", json=completion(prompt_len=n, stream=False)).raise_for_status()
        assert [p for p, _, _ in _paths(rig)] == ["mixed", "disaggregated", "mixed", "disaggregated"]


def test_cost_policy_goes_mixed_when_cheaper_and_not_past_the_tpot_load_limit():
    # cost (default): MIXED when its predicted TTFT beats the best prefill instance's plus the
    # hand-off (the decode instance's first step; no KV transfer time is known live) and its
    # predicted decode interval with the request added stays under tpot_load_limit · SLO_TPOT.
    with live_rig(roles=PDM) as rig, rig.client() as c:
        st = rig.router.state
        c.post("/v1/completions", json=completion(stream=False, seed=1)).raise_for_status()   # idle: MIXED
        st.begin_decode(st.instances[2], 200_000)   # 1e-6·2e5 + 0.002 = 0.2 s > SLO_TPOT 0.1 s
        c.post("/v1/completions", json=completion(stream=False, seed=2)).raise_for_status()
        st.end_decode(st.instances[2], 200_000)
        st.begin_prefill(st.instances[0], 50_000)   # the prefill pool queues: Σ T = 0.5 s
        c.post("/v1/completions", json=completion(stream=False, seed=3)).raise_for_status()
        st.end_prefill(st.instances[0], 50_000, computed=False)
        assert [p for p, _, _ in _paths(rig)] == ["mixed", "disaggregated", "mixed"]


def test_the_split_policy_is_set_through_the_admin_api_and_bad_values_name_the_field():
    with live_rig(roles=PDM, routing="arrow") as rig, rig.client() as c:
        r = c.post("/routing", json={"mixed": {"mixed_policy": "fraction", "fraction": 1.0}}, headers=AUTH)
        assert r.status_code == 200 and r.json()["routing"] == "arrow" and r.json()["mixed"]["fraction"] == 1.0
        c.post("/v1/completions", json=completion(stream=False)).raise_for_status()
        assert _paths(rig)[-1][0] == "mixed"
        r = c.post("/routing", json={"mixed": {"mixed_policy": "sometimes"}}, headers=AUTH)
        assert r.status_code == 422 and "mixed_policy" in r.json()["error"]["message"]
        r = c.post("/routing", json={"mixed": {"fraction": 2}}, headers=AUTH)
        assert r.status_code == 422 and "fraction" in r.json()["error"]["message"]
        assert rig.router.mixed_config.fraction == 1.0   # a refused change changes nothing


# ------------------------------------------------------------------------------------ flips ----
def test_flips_to_and_from_mixed_while_streams_are_in_flight_lose_nothing():
    cfg = [FakeConfig(decode_step_s=0.01)] * 3
    with live_rig(roles=PDM, configs=cfg, mixed={"mixed_policy": "fraction", "fraction": 0.5}) as rig:
        results: list[int] = []

        def one(k: int) -> None:
            with rig.client() as c:
                body = completion(prompt_len=100 + k, max_tokens=12, seed=k)
                with c.stream("POST", "/v1/completions", json=body) as r:
                    tokens, _ = read_stream(r)
                results.append(int(tokens == expected_tokens(body["prompt"], 12)))

        threads = [threading.Thread(target=one, args=(k,)) for k in range(16)]
        steps = [[(0, "mixed")], [(2, "decode")], [(1, "mixed")], [(0, "prefill")]]   # P->M, M->D, D->M, M->P
        with rig.client() as c:
            for k, flips in enumerate(steps):
                for t in threads[4 * k: 4 * k + 4]:
                    t.start()
                time.sleep(0.03)
                if k == 0:   # the first four are dispatched while both paths exist (on a loaded box 30 ms is not enough)
                    deadline = time.time() + 10
                    while rig.router.mixed_summary()["decisions"] < 4 and time.time() < deadline:
                        time.sleep(0.005)
                r = c.post("/roles", json={"flips": [{"id": i, "role": role} for i, role in flips]}, headers=AUTH)
                assert r.status_code == 200, r.text
        for t in threads:
            t.join(30)
        assert sum(results) == 16
        assert [(f.old, f.new) for f in rig.router.state.flips] == [
            (Role.PREFILL, Role.MIXED), (Role.MIXED, Role.DECODE), (Role.DECODE, Role.MIXED), (Role.MIXED, Role.PREFILL)]
        assert len(rig.router.records) == 16 and not any(r.rejected for r in rig.router.records)
        assert {p for p, _, _ in _paths(rig)} >= {"mixed", "disaggregated"}
        assert _idle(rig)


@pytest.mark.parametrize("roles,flips,needle", [
    (["decode", "mixed"], [(1, "decode")], "no way to serve every request"),
    (["prefill", "mixed", "mixed"], [(1, "prefill"), (2, "prefill")], "no way to serve every request"),
    (["mixed", "mixed"], [(0, "prefill"), (1, "prefill")], "no way to serve every request"),
    (["prefill", "decode", "mixed"], [(0, "decode"), (2, "decode")], "empty the prefill pool"),
])
def test_a_flip_that_leaves_no_way_to_serve_is_a_409_and_changes_nothing(roles, flips, needle):
    with live_rig(roles=roles) as rig, rig.client() as c:
        r = c.post("/roles", json={"flips": [{"id": i, "role": role} for i, role in flips]}, headers=AUTH)
        assert r.status_code == 409 and needle in r.json()["error"]["message"]
        assert [s.role.value for s in rig.router.state.instances] == roles


@pytest.mark.parametrize("roles,flips,after", [
    (["prefill", "decode", "mixed"], [(0, "mixed"), (1, "mixed")], ["mixed"] * 3),   # collapse to all-MIXED
    (["mixed", "mixed", "mixed"], [(0, "prefill"), (1, "decode")], ["prefill", "decode", "mixed"]),   # open P/D
    (["prefill", "decode", "mixed"], [(2, "decode")], ["prefill", "decode", "decode"]),   # the last MIXED goes
    (["prefill", "decode", "mixed"], [(0, "mixed")], ["mixed", "decode", "mixed"]),   # P empties, MIXED serves
])
def test_flips_that_keep_a_way_to_serve_are_applied(roles, flips, after):
    with live_rig(roles=roles) as rig, rig.client() as c:
        r = c.post("/roles", json={"flips": [{"id": i, "role": role} for i, role in flips]}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["roles"] == after
        assert rig.router.state.num_mixed == after.count("mixed")
        c.post("/v1/completions", json=completion(stream=False)).raise_for_status()


def test_get_roles_lists_each_instance_and_pool_size_behind_the_token():
    with live_rig(roles=PDM) as rig, rig.client() as c:
        assert c.get("/roles").status_code == 401
        assert c.get("/roles", headers=AUTH).json() == {"roles": PDM, "pools": {"prefill": 1, "decode": 1, "mixed": 1}}
        c.post("/roles", json={"id": 1, "role": "mixed"}, headers=AUTH).raise_for_status()
        assert c.get("/roles", headers=AUTH).json()["pools"] == {"prefill": 1, "decode": 0, "mixed": 2}
        assert 'arrow_router_instance_role{instance="2"} 2.0' in c.get("/metrics").text


@pytest.mark.parametrize("body,needle", [
    ({"id": 0, "role": "mixd"}, "role"), ({"flips": [{"id": 0, "role": "MIXED!"}]}, "flips.0.role")])
def test_bad_role_strings_are_a_422_naming_the_field(body, needle):
    with live_rig(roles=PDM) as rig, rig.client() as c:
        r = c.post("/roles", json=body, headers=AUTH)
        assert r.status_code == 422 and needle in r.json()["error"]["message"]
        assert [s.role.value for s in rig.router.state.instances] == PDM


def test_router_config_files_take_mixed_instances_and_name_a_bad_role(tmp_path):
    good = tmp_path / "router.yaml"
    good.write_text("instances:\n  - {url: 'http://127.0.0.1:8100', role: prefill}\n"
                    "  - {url: 'http://127.0.0.1:8101', role: mixed}\n"
                    "mixed: {mixed_policy: prompt-threshold, prompt_threshold_tokens: 512}\n")
    cfg = load_config_file(good, RouterConfig)
    assert [i.role for i in cfg.instances] == [Role.PREFILL, Role.MIXED]
    assert cfg.mixed.mixed_policy == "prompt-threshold" and cfg.mixed.prompt_threshold_tokens == 512
    bad = tmp_path / "bad.yaml"
    bad.write_text("instances:\n  - {url: 'http://127.0.0.1:8100', role: mixt}\n")
    with pytest.raises(ValueError) as exc:
        load_config_file(bad, RouterConfig)
    assert str(bad) in str(exc.value) and "instances.0.role" in str(exc.value) and "\n" not in str(exc.value)
    bad.write_text("instances:\n  - {url: 'http://127.0.0.1:8100', role: mixed}\nmixed: {fraction: -1}\n")
    with pytest.raises(ValueError, match="mixed.fraction"):
        load_config_file(bad, RouterConfig)


def test_flips_to_roles_reaches_a_p_d_m_split_with_fewest_flips():
    P, D, M = Role.PREFILL, Role.DECODE, Role.MIXED
    assert flips_to_roles([P, D, D, D], 1, 1) == [Flip(3, M)]
    assert flips_to_roles([P, P, D, M], 1, 0) == [Flip(1, D), Flip(3, D)]   # static:1 on 4 instances: 1P3D
    assert flips_to_roles([M, M, M], 1, 1) == [Flip(0, P), Flip(1, D)]
    assert flips_to_roles([P, D, M], 1, 1) == []
    with pytest.raises(ValueError):
        flips_to_roles([P, D], 2, 1)


# ------------------------------------------------------------------- the Cluster backend ----
def test_live_cluster_views_show_mixed_and_its_window_has_the_mixed_pool():
    with live_rig(roles=PDM, mixed={"mixed_policy": "fraction", "fraction": 0.5}) as rig:
        cl = LiveCluster(rig.url, TOKEN)
        assert cl.info.initial_roles == (Role.PREFILL, Role.DECODE, Role.MIXED)
        assert cl.info.mode.value == "disaggregated"
        with rig.client() as c:
            for k in range(4):
                with c.stream("POST", "/v1/completions", json=completion(max_tokens=6, seed=k)) as r:
                    read_stream(r)
        w = cl.advance(0.2)
        assert w.mixed.num_instances == 1 and w.mixed.first_tokens == 2 and w.mixed.finished == 2
        assert w.prefill.first_tokens == 2 and w.decode.finished == 2 and w.finished == 4
        assert w.mixed.ttft_p90 > 0 and w.mixed.tpot_p90 > 0
        cl.flip_many([Flip(1, Role.MIXED)])
        assert [v.role for v in cl.instances()] == [Role.PREFILL, Role.MIXED, Role.MIXED]
        cl.close()


def _load_threads(rig, stop: threading.Event, results: list[int], workers: int = 3) -> list[threading.Thread]:
    def worker(w: int) -> None:
        k = 0
        with rig.client() as c:
            while not stop.is_set():
                body = completion(prompt_len=80, max_tokens=10, seed=w * 1000 + k)
                with c.stream("POST", "/v1/completions", json=body) as r:
                    tokens, _ = read_stream(r)
                results.append(int(r.status_code == 200 and tokens == expected_tokens(body["prompt"], 10)))
                k += 1
    return [threading.Thread(target=worker, args=(w,)) for w in range(workers)]


def test_deploy_runs_arrow_on_a_prefill_decode_mixed_cluster():
    from arrow_rl.controllers.registry import make_policy

    with live_rig(roles=PDM, routing="arrow-noflip", mixed={"mixed_policy": "fraction", "fraction": 0.5}) as rig:
        cl = LiveCluster(rig.url, TOKEN)
        policy = make_policy("arrow", 3)
        stop, results = threading.Event(), []
        ts = _load_threads(rig, stop, results)
        for t in ts:
            t.start()
        try:
            stats = run_control_loop(cl, policy.controller, 0.2, steps=4, act_timeout_s=10)
        finally:
            stop.set()
            for t in ts:
                t.join(30)
            cl.close()
        assert stats.steps == 4 and stats.controller_errors == 0 and stats.flips_rejected == 0
        assert all(e["error"] is None for e in stats.decisions)
        assert results and all(results) and not any(r.rejected for r in rig.router.records)
        assert {p for p, _, _ in _paths(rig)} == {"mixed", "disaggregated"}   # both paths served


def test_deploy_runs_a_moves_checkpoint_that_flips_to_and_from_mixed(tmp_path):
    from arrow_rl.controllers.registry import make_policy

    # masked-greedy: M->D while a MIXED instance exists, else D->M: a flip every step, both ways
    ckpt = build_moves_checkpoint(tmp_path / "moves", {MOVE_M_TO_D: 10.0, MOVE_D_TO_M: 9.0})
    policy = make_policy(str(ckpt), 3)
    with live_rig(roles=PDM, routing="arrow-noflip") as rig:
        cl = LiveCluster(rig.url, TOKEN)
        stop, results = threading.Event(), []
        ts = _load_threads(rig, stop, results)
        for t in ts:
            t.start()
        try:
            stats = run_control_loop(cl, policy.controller, 0.2, steps=4, act_timeout_s=20)
        finally:
            stop.set()
            for t in ts:
                t.join(30)
            cl.close()
        assert stats.controller_errors == 0 and stats.flips_rejected == 0, list(stats.decisions)
        moves = [(f.old, f.new) for f in rig.router.state.flips]
        assert moves == [(Role.MIXED, Role.DECODE), (Role.DECODE, Role.MIXED)] * 2
        assert results and all(results) and not any(r.rejected for r in rig.router.records)


def test_launch_config_labels_the_last_instances_mixed():
    from arrow_rl.cluster.live.launcher import LaunchConfig

    assert LaunchConfig(num_instances=3, initial_mixed=1).roles() == [Role.PREFILL, Role.DECODE, Role.MIXED]
    assert LaunchConfig(num_instances=4, initial_prefill=1, initial_mixed=1).roles() == \
        [Role.PREFILL, Role.DECODE, Role.DECODE, Role.MIXED]
    assert LaunchConfig(num_instances=2, initial_mixed=2).roles() == [Role.MIXED, Role.MIXED]
    assert LaunchConfig(num_instances=4).roles() == [Role.PREFILL, Role.PREFILL, Role.DECODE, Role.DECODE]
    with pytest.raises(ValueError, match="initial_prefill \\+ initial_mixed"):
        LaunchConfig(num_instances=3, initial_prefill=2, initial_mixed=2)


def test_the_real_vllm_scenario_on_fakes_checkpoint_then_arrow_flip_and_every_request_completes(tmp_path):
    # tests/test_live_mixed.py runs this on three real vLLM instances (the lead's live tier)
    cfg = [FakeConfig(decode_step_s=0.02) for _ in range(3)]
    with live_rig(roles=PDM, configs=cfg, routing="arrow-noflip", slo_tpot_s=0.01,
                  mixed={"mixed_policy": "fraction", "fraction": 0.5}) as rig:
        stop, results = threading.Event(), []
        ts = _load_threads(rig, stop, results)
        for t in ts:
            t.start()
        try:
            run = checkpoint_then_arrow(rig.router, rig.url, TOKEN, tmp_path / "moves", interval_s=0.2,
                                        arrow_interval_s=0.15)
        finally:
            stop.set()
            for t in ts:
                t.join(30)
        assert run.checkpoint_flips == [(Role.MIXED, Role.PREFILL), (Role.PREFILL, Role.MIXED),
                                        (Role.MIXED, Role.PREFILL)], run.checkpoint_log
        assert run.arrow_flips == [(Role.PREFILL, Role.DECODE)], run.arrow_log
        assert sorted(s.role.value for s in rig.router.state.instances) == ["decode", "decode", "prefill"]
        assert results and all(results) and not any(r.rejected for r in rig.router.records)
        assert {p for p, _, _ in _paths(rig)} >= {"mixed", "disaggregated"}


def test_cli_deploy_applies_a_static_split_with_a_mixed_pool():
    from typer.testing import CliRunner

    from arrow_rl.cli import app

    with live_rig(roles=["prefill", "decode", "decode"]) as rig:
        r = CliRunner().invoke(app, ["deploy", "--controller", "static:1:1:1", "--router", rig.url, "--interval",
                                     "100ms", "--token", TOKEN, "--steps", "1"])
        assert r.exit_code == 0, r.output
        assert [s.role.value for s in rig.router.state.instances] == PDM
        assert rig.router.routing.name == "arrow-noflip"


def test_cli_instances_may_be_mixed():
    from arrow_rl.cli.live import _instances_from

    assert _instances_from(None, ["http://a:1=prefill", "http://b:2=mixed"])[1] == {"url": "http://b:2", "role": "mixed"}
