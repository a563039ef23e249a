"""Tier-1 tests of the live router against fake vLLM instances (seconds, no vLLM needed)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from fuzz import fuzz
from hypothesis import given
from hypothesis import strategies as st

from arrow_rl.cluster.live.fake_vllm import FakeConfig, expected_tokens
from live_fixtures import AUTH, completion, live_rig, read_stream


def test_two_leg_protocol_prefill_then_decode_with_kv_params():
    with live_rig() as rig, rig.client() as c:
        body = completion(prompt_len=300, max_tokens=6, stream=True)
        with c.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            tokens, _ = read_stream(r)
        assert tokens == expected_tokens(body["prompt"], 6)
        pre, dec = rig.fakes[0].requests_seen[-1], rig.fakes[1].requests_seen[-1]
        # docs/live_cluster.md, the router's protocol, step 1: the prefill leg is max_tokens=1, stream=false, do_remote_decode.
        assert pre["max_tokens"] == 1 and pre["stream"] is False
        assert pre["kv_transfer_params"]["do_remote_decode"] is True
        assert "stream_options" not in pre
        # Step 4: decode leg is the original body plus the prefill's kv_transfer_params.
        assert dec["max_tokens"] == 6 and dec["stream"] is True
        assert dec["kv_transfer_params"]["remote_engine_id"] == rig.fakes[0].engine_id
        assert dec["kv_transfer_params"]["do_remote_prefill"] is True


def test_decode_instance_counts_external_kv_tokens():
    with live_rig() as rig, rig.client() as c:
        c.post("/v1/completions", json=completion(prompt_len=256, stream=False)).raise_for_status()
        metrics = httpx.get(rig.servers[1].url + "/metrics").text
        assert 'vllm:prompt_tokens_by_source_total{engine="0",model_name="tiny",source="external_kv_transfer"} 256.0' in metrics


def test_non_streaming_response_matches_local_run_and_hides_kv_params():
    with live_rig() as rig, rig.client() as c:
        body = completion(prompt_len=150, max_tokens=5, stream=False)
        out = c.post("/v1/completions", json=body).json()
        assert out["choices"][0]["token_ids"] == expected_tokens(body["prompt"], 5)
        assert "kv_transfer_params" not in out
        assert out["usage"]["completion_tokens"] == 5


def test_injected_usage_chunk_is_not_forwarded_unless_asked():
    with live_rig() as rig, rig.client() as c:
        with c.stream("POST", "/v1/completions", json=completion(max_tokens=3)) as r:
            _, events = read_stream(r)
        assert all(e.get("choices") for e in events)
        body = {**completion(max_tokens=3), "stream_options": {"include_usage": True}}
        with c.stream("POST", "/v1/completions", json=body) as r:
            _, events = read_stream(r)
        assert events[-1]["usage"]["completion_tokens"] == 3


def test_same_instance_guard_sends_one_plain_request():
    with live_rig(roles=["prefill", "decode"]) as rig, rig.client() as c:
        # A routing policy that puts the decode leg where the prefill ran (Arrow Alg. 1 line 3).
        class Same:
            name = "same"
            def reset(self, n): pass
            def route_prefill(self, r, ctx): return 0
            def route_decode(self, r, p, ctx): return p
        rig.router.routing = Same()
        body = completion(prompt_len=200, max_tokens=4)
        with c.stream("POST", "/v1/completions", json=body) as r:
            tokens, _ = read_stream(r)
        assert tokens == expected_tokens(body["prompt"], 4)
        last = rig.fakes[0].requests_seen[-1]
        assert "kv_transfer_params" not in last  # plain, never a self hand-off
        assert rig.router.records[-1].prefill_instance == rig.router.records[-1].decode_instance == 0


def test_fake_rejects_self_handoff_like_nixl():
    with live_rig() as rig:
        url = rig.servers[0].url
        pre = httpx.post(url + "/v1/completions", json={**completion(stream=False), "max_tokens": 1,
                                                        "kv_transfer_params": {"do_remote_decode": True}}).json()
        r = httpx.post(url + "/v1/completions", json={**completion(stream=False),
                                                      "kv_transfer_params": pre["kv_transfer_params"]})
        assert r.status_code == 500 and "Cannot register local engine" in r.text


def test_flip_moves_new_prefill_legs_to_the_flipped_instance():
    with live_rig(roles=["prefill", "decode", "decode"]) as rig, rig.client() as c:
        r = c.post("/roles", json={"flips": [{"id": 0, "role": "decode"}, {"id": 2, "role": "prefill"}]}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["roles"] == ["decode", "decode", "prefill"]
        c.post("/v1/completions", json=completion(stream=False)).raise_for_status()
        assert rig.router.records[-1].prefill_instance == 2


def test_flip_during_inflight_requests_loses_none():
    cfg = [FakeConfig(decode_step_s=0.01), FakeConfig(decode_step_s=0.01), FakeConfig(decode_step_s=0.01)]
    with live_rig(roles=["prefill", "decode", "decode"], configs=cfg) as rig:
        results: list[int] = []

        def one(k: int) -> None:
            with rig.client() as c:
                body = completion(prompt_len=100 + k, max_tokens=10, seed=k)
                with c.stream("POST", "/v1/completions", json=body) as r:
                    tokens, _ = read_stream(r)
                results.append(int(tokens == expected_tokens(body["prompt"], 10)))

        threads = [threading.Thread(target=one, args=(k,)) for k in range(12)]
        for t in threads:
            t.start()
        with rig.client() as c:
            for k in range(4):  # swap which instance prefills, while requests are in flight
                a, b = ("decode", "prefill") if k % 2 == 0 else ("prefill", "decode")
                c.post("/roles", json={"flips": [{"id": 0, "role": a}, {"id": 2, "role": b}]},
                       headers=AUTH).raise_for_status()
                time.sleep(0.03)
        assert len(rig.router.state.flips) == 8
        for t in threads:
            t.join(20)
        assert sum(results) == 12


@pytest.mark.parametrize("headers,status", [({}, 401), ({"Authorization": "Bearer nope"}, 403),
                                            ({"Authorization": "Basic abc"}, 401)])
def test_admin_api_requires_the_bearer_token(headers, status):
    with live_rig() as rig, rig.client() as c:
        assert c.get("/state", headers=headers).status_code == status
        assert c.post("/roles", json={"id": 0, "role": "decode"}, headers=headers).status_code == status
        assert [s.role.value for s in rig.router.state.instances] == ["prefill", "decode"]


@pytest.mark.parametrize("body,status,needle", [
    ({"id": 7, "role": "decode"}, 404, "unknown instance 7"),
    ({"id": 0, "role": "decode"}, 409, "empty the prefill pool"),
    ({"id": 0, "role": "sideways"}, 422, "role"),
    ({"id": "zero", "role": "decode"}, 422, "id"),
    ({"role": "decode"}, 422, "needs 'id' and 'role'"),
    ({"flips": [{"id": 1, "role": "prefill"}, {"id": 9, "role": "decode"}]}, 404, "unknown instance 9"),
])
def test_bad_flip_requests_get_a_4xx_with_a_reason_and_change_nothing(body, status, needle):
    with live_rig() as rig, rig.client() as c:
        r = c.post("/roles", json=body, headers=AUTH)
        assert r.status_code == status
        assert needle in r.json()["error"]["message"]
        assert [s.role.value for s in rig.router.state.instances] == ["prefill", "decode"]


def test_malformed_json_to_admin_and_client_endpoints_is_a_400():
    with live_rig() as rig, rig.client() as c:
        assert c.post("/roles", content=b"{nope", headers=AUTH).status_code == 400
        r = c.post("/v1/completions", content=b"{nope")
        assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
        r = c.post("/v1/completions", json={"model": "tiny"})
        assert r.status_code == 400 and "prompt" in r.json()["error"]["message"]
        r = c.post("/v1/completions", json={**completion(), "max_tokens": 0})
        assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]


@pytest.mark.parametrize("chat", [False, True])
def test_a_kv_pull_that_fails_inside_the_stream_is_retried_before_any_byte_reaches_the_client(chat):
    # Real vLLM (kv_load_failure_policy "fail") answers the decode leg 200 and then sends an error
    # event as the first (chat: second, after the role delta) event. Nothing has reached the client
    # yet, so the router retries the request plain elsewhere instead of relaying the error.
    cfg = [FakeConfig(), FakeConfig(fail_kv_pull_in_stream=1), FakeConfig()]
    with live_rig(roles=["prefill", "decode", "decode"], configs=cfg) as rig, rig.client() as c:
        rig.router.routing.route_decode = lambda r, p, ctx: 1  # type: ignore[method-assign]
        if chat:
            body = {"model": "tiny", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4,
                    "ignore_eos": True, "stream": True}
            with c.stream("POST", "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                events = [x for x in r.iter_lines() if x.startswith("data: ")]
            assert events[-1] == "data: [DONE]" and not any('"error"' in x for x in events)
            assert sum(1 for x in events if '"content"' in x and '"content": ""' not in x
                       and '"content":""' not in x) == 4
        else:
            body = completion(max_tokens=4)
            with c.stream("POST", "/v1/completions", json=body) as r:
                assert r.status_code == 200
                tokens, _ = read_stream(r)
            assert tokens == expected_tokens(body["prompt"], 4)
        rec = rig.router.records[-1]
        assert not rec.rejected and rec.decode_instance != 1
        assert rig.fakes[1].config.fail_kv_pull_in_stream == 0  # the injected failure did fire


def test_decode_failure_before_first_byte_is_retried_once_as_plain_request(tmp_path):
    cfg = [FakeConfig(), FakeConfig(fail_decode_before_stream=1), FakeConfig()]
    journal = tmp_path / "journal.jsonl"
    with live_rig(roles=["prefill", "decode", "decode"], configs=cfg, journal=str(journal)) as rig, \
            rig.client() as c:
        rig.router.routing.route_decode = lambda r, p, ctx: 1  # type: ignore[method-assign]
        body = completion(max_tokens=4)
        with c.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            tokens, _ = read_stream(r)
        assert tokens == expected_tokens(body["prompt"], 4)
        rec = rig.router.records[-1]
        assert rec.decode_instance != 1 and not rec.rejected
        retried = rig.fakes[rec.decode_instance].requests_seen[-1]
        assert "kv_transfer_params" not in retried
    # The journal says why the request was served plain: the failed hand-off leg and its error.
    (entry,) = [json.loads(x) for x in journal.read_text().splitlines()]
    assert entry["path"] == "retry" and entry["retried"]
    assert len(entry["notes"]) == 1 and entry["notes"][0].startswith("disaggregated@1: instance 1 answered HTTP 5")


def test_stream_break_mid_decode_ends_with_a_clean_error_event():
    cfg = [FakeConfig(), FakeConfig(break_stream_after=2)]
    with live_rig(configs=cfg) as rig, rig.client() as c:
        with c.stream("POST", "/v1/completions", json=completion(max_tokens=6)) as r:
            lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        assert "error" in json.loads(lines[-2][6:])
        assert rig.router.records[-1].rejected


def test_dead_instance_is_marked_unhealthy_and_gets_no_new_work():
    with live_rig(roles=["prefill", "decode", "decode"]) as rig, rig.client() as c:
        rig.servers[1].stop()
        for k in range(4):
            r = c.post("/v1/completions", json=completion(stream=False, seed=k))
            assert r.status_code == 200
        assert not rig.router.state.instances[1].healthy
        assert all(rec.decode_instance != 1 for rec in rig.router.records)


def test_a_leg_routed_to_an_unhealthy_instance_falls_back_and_the_journal_says_why():
    with live_rig(roles=["prefill", "decode", "decode"]) as rig, rig.client() as c:
        rig.servers[1].stop()  # so a health check cannot bring it back
        rig.router.state.mark_unhealthy(rig.router.state.instances[1], "test says so")
        rig.router.routing.route_decode = lambda r, p, ctx: 1  # type: ignore[method-assign]
        assert c.post("/v1/completions", json=completion(stream=False)).status_code == 200
        assert rig.router.records[-1].decode_instance == 2
        (finish,) = [e for e in rig.router.state.events_after(0)[0] if e["kind"] == "finish"]
        (note,) = finish["notes"]
        assert note.startswith("decode routed to 1, unhealthy (") and note.endswith(") -> 2")


def test_prefill_failure_falls_back_to_a_plain_request_elsewhere():
    cfg = [FakeConfig(fail_prefill=1), FakeConfig()]
    with live_rig(configs=cfg) as rig, rig.client() as c:
        body = completion(stream=False, max_tokens=3)
        out = c.post("/v1/completions", json=body)
        assert out.status_code == 200
        assert out.json()["choices"][0]["token_ids"] == expected_tokens(body["prompt"], 3)
        assert rig.router.records[-1].decode_instance == 1


def test_hung_instance_times_out_into_a_clean_error_not_a_hang():
    cfg = [FakeConfig(), FakeConfig(hang=True)]
    with live_rig(configs=cfg, stream_idle_timeout_s=0.5, request_timeout_s=0.5, health_timeout_s=0.3) as rig, \
            rig.client() as c:
        r = c.post("/v1/completions", json=completion(stream=False))
        # The decode leg timed out; its retry went back to the healthy instance (plain request).
        assert r.status_code == 200
        assert rig.router.records[-1].decode_instance == 0


def test_all_instances_down_gives_503():
    with live_rig() as rig, rig.client() as c:
        for s in rig.servers:
            s.stop()
        for inst in rig.router.state.instances:
            rig.router.state.mark_unhealthy(inst, "test")
        r = c.post("/v1/completions", json=completion(stream=False))
        assert r.status_code == 503


def test_journal_has_one_line_per_request_with_leg_timings(tmp_path):
    journal = tmp_path / "journal.jsonl"
    with live_rig(journal=str(journal)) as rig, rig.client() as c:
        for k in range(3):
            c.post("/v1/completions", json=completion(stream=k % 2 == 0, seed=k)).raise_for_status()
    lines = [json.loads(x) for x in journal.read_text().splitlines()]
    assert len(lines) == 3
    for e in lines:
        assert e["path"] == "disaggregated" and e["status"] == 200
        assert e["prefill_start_s"] <= e["prefill_end_s"] <= e["decode_start_s"] <= e["finish_s"]
        assert e["prefill_instance"] == 0 and e["decode_instance"] == 1


def test_router_exposes_prometheus_metrics():
    with live_rig() as rig, rig.client() as c:
        c.post("/v1/completions", json=completion(stream=True, max_tokens=4)).raise_for_status()
        text = c.get("/metrics").text
        assert 'arrow_router_requests_total{outcome="ok",path="disaggregated"} 1.0' in text
        assert "arrow_router_ttft_seconds_count 1.0" in text
        assert 'arrow_router_instance_role{instance="0"} 1.0' in text


def test_arrow_routing_runs_algorithm_1_on_live_state():
    with live_rig(roles=["prefill", "prefill", "decode"], routing="arrow") as rig, rig.client() as c:
        assert rig.router.routing.name == "arrow"
        # Load instance 0 with resident prefill work: Alg. 1's prefill cost c2 = Σ T prefers 1.
        rig.router.state.begin_prefill(rig.router.state.instances[0], 50_000)
        c.post("/v1/completions", json=completion(stream=False)).raise_for_status()
        assert rig.router.records[-1].prefill_instance == 1


def test_routing_policy_can_be_switched_through_the_admin_api():
    with live_rig() as rig, rig.client() as c:
        assert c.post("/routing", json={"policy": "arrow-noflip"}, headers=AUTH).json()["routing"] == "arrow-noflip"
        r = c.post("/routing", json={"policy": "random"}, headers=AUTH)
        assert r.status_code == 422 and "unknown routing policy" in r.text


def test_chat_completions_use_both_legs_with_max_completion_tokens():
    with live_rig() as rig, rig.client() as c:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hello there, " * 20}],
                "max_completion_tokens": 5, "stream": True}
        with c.stream("POST", "/v1/chat/completions", json={**body, "return_token_ids": True}) as r:
            assert r.status_code == 200
            tokens, _ = read_stream(r)
        assert len(tokens) == 5
        pre = rig.fakes[0].requests_seen[-1]
        assert pre["max_tokens"] == 1 and pre["kv_transfer_params"]["do_remote_decode"] is True
        assert rig.fakes[1].requests_seen[-1]["max_completion_tokens"] == 5
        rec = rig.router.records[-1]
        assert rec.input_tokens == 260  # the instance's usage replaces the router's 65-token estimate
        assert (rec.prefill_instance, rec.decode_instance) == (0, 1)


def test_client_disconnect_mid_stream_releases_the_instance_bookkeeping():
    cfg = [FakeConfig(), FakeConfig(decode_step_s=0.05)]
    with live_rig(configs=cfg) as rig:
        with rig.client() as c:
            with c.stream("POST", "/v1/completions", json=completion(max_tokens=40)) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        break  # read one chunk, then hang up
        deadline = time.time() + 30  # returns as soon as the relay cleaned up
        d = rig.router.state.instances[1]
        while (d.num_decode or not rig.router.records) and time.time() < deadline:
            time.sleep(0.05)
        assert d.num_decode == 0 and d.decode_tokens == 0
        assert rig.router.records[-1].rejected and "disconnected" in rig.router.records[-1].reject_reason


def test_live_decode_fit_never_has_a_negative_fixed_cost():
    # A decode step has a positive fixed cost; a noisy two-point fit that dips below zero is
    # refitted through the origin so MT(i, SLO_TPOT) is not inflated (Arrow §5.3).
    from arrow_rl.cluster.live.profiles import fit_decode

    slope, intercept = fit_decode([100.0, 400.0], [0.002, 0.012])   # free fit: intercept < 0
    assert intercept == 0.0 and slope == pytest.approx((100 * 0.002 + 400 * 0.012) / (100**2 + 400**2))
    slope, intercept = fit_decode([100.0, 400.0], [0.010, 0.013])   # physical: kept as fitted
    assert intercept == pytest.approx(0.009) and slope == pytest.approx(1e-5)


def test_a_prefill_answer_with_junk_kv_params_is_served_by_a_local_prefill(monkeypatch):
    """An instance whose prefill answer carries ``kv_transfer_params`` that are not an object: the
    decode leg goes without them (the decode instance prefills itself), and the client is served."""
    with live_rig() as rig, rig.client() as c:
        real = rig.router._post_json

        async def junk_kv(*args, **kwargs):
            out = await real(*args, **kwargs)
            return {**out, "kv_transfer_params": ["not", "an", "object"]}

        monkeypatch.setattr(rig.router, "_post_json", junk_kv)
        body = completion(prompt_len=50, max_tokens=4, stream=True)
        with c.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            tokens, _ = read_stream(r)
        assert tokens == expected_tokens(body["prompt"], 4)
        assert "kv_transfer_params" not in rig.fakes[1].requests_seen[-1]


_junk = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=6),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                     max_leaves=8)


@fuzz(40)
@given(answer=st.one_of(_junk, st.fixed_dictionaries({}, optional={"kv_transfer_params": _junk, "usage": _junk,
                                                                     "choices": _junk})))
def test_any_prefill_answer_still_serves_the_request(live_pair, answer):
    """Whatever JSON a prefill instance answers with status 200, the client gets its tokens: the
    router takes what it can use (an object's ``kv_transfer_params``, an int ``prompt_tokens``) and
    otherwise lets the decode instance prefill locally; a decode leg refused for bad params is retried."""
    rig, c = live_pair

    async def junk_answer(*args, **kwargs):
        return answer

    rig.router._post_json = junk_answer
    try:
        body = completion(prompt_len=20, max_tokens=3, stream=True)
        with c.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            tokens, _ = read_stream(r)
    finally:
        del rig.router._post_json
    assert tokens == expected_tokens(body["prompt"], 3)


@pytest.fixture(scope="module")
def live_pair():
    with live_rig() as rig, rig.client() as c:
        yield rig, c
