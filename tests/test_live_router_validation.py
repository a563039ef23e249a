"""The router refuses bad requests itself, the way vLLM would, and stays up and bounded (issue 13 §1)."""

from __future__ import annotations

import socket
import time

import pytest

from live_fixtures import AUTH, completion, live_rig


def _wait_models(rig) -> None:
    deadline = time.time() + 30  # learned by the first health check; a loaded box delays it
    while rig.router.models is None and time.time() < deadline:
        time.sleep(0.02)
    assert rig.router.models == frozenset({"tiny"}) and rig.router.max_model_len == 2048


def _assert_vllm_error(r, status: int, needle: str) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == status
    assert err["type"] == {400: "BadRequestError", 404: "NotFoundError", 413: "RequestEntityTooLargeError"}.get(
        status, err["type"])
    assert needle in err["message"], err["message"]


def _raw_exchange(port: int, requests: list[bytes]) -> list[bytes]:
    """Send HTTP/1.1 requests one after another on ONE keep-alive connection; return each status line."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        for req in requests:
            s.sendall(req)
            status = f.readline()
            length = 0
            while (line := f.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            f.read(length)
            out.append(status)
    return out


def _post(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.mark.parametrize("raw", [
    b'{"model": "tiny", "prompt": "\xff\xfe", "max_tokens": 2}',       # invalid UTF-8
    b"[" * 50_000 + b"]" * 50_000,                                      # nesting beyond any parser's depth
    b'{"model": "tiny", "prompt": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    b'{"prompt": [1, 2], "temperature": NaN}',                          # not JSON
    b"",
], ids=["invalid-utf8", "deep-nesting", "deep-prompt", "nan-literal", "empty"])
def test_a_malformed_body_is_a_400_and_the_connection_stays_usable(raw):
    good = b'{"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 2}'
    with live_rig() as rig:
        statuses = _raw_exchange(rig.router_server.port, [_post("/v1/completions", raw),
                                                          _post("/v1/completions", good)])
        assert statuses[0].startswith(b"HTTP/1.1 400"), statuses
        assert statuses[1].startswith(b"HTTP/1.1 200"), statuses
        assert len(rig.fakes[0].requests_seen) + len(rig.fakes[1].requests_seen) == 2  # only the good one's legs


@pytest.mark.parametrize("patch,needle", [
    ({"max_tokens": 2**63}, "max_tokens"),
    ({"max_tokens": 10**30}, "max_tokens must be an integer"),
    ({"max_tokens": 2048}, "max_tokens=2048 cannot be greater than max_model_len=2048"),
    ({"max_tokens": 1900}, "maximum context length is 2048"),     # 200-token prompt + 1900 > 2048
    ({"max_tokens": "8"}, "max_tokens must be an integer"),
    ({"max_tokens": True}, "max_tokens must be an integer"),
    ({"temperature": -1}, "temperature"),
    ({"temperature": "hot"}, "temperature must be a finite number"),
    ({"top_p": 0}, "top_p"),
    ({"n": 0}, "n must be in"),
    ({"n": 16385}, "n must be in [1, 16384]"),                   # vLLM: VLLM_MAX_N_SEQUENCES
    ({"stream": "yes"}, "stream must be a boolean"),
    ({"stop": ["", "x"]}, "stop cannot contain an empty string"),
    ({"stream": False, "stream_options": {"include_usage": True}}, "Stream options"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [1, -2]}, "non-negative integers"),
    ({"prompt": ["a", "b"]}, "batch of prompts"),
    ({"prompt": {"x": 1}}, "prompt"),
    ({"prompt": list(range(2049))}, "maximum context length is 2048"),
    ({"min_tokens": 9, "max_tokens": 4}, "min_tokens"),
    ({"kv_transfer_params": {"do_remote_prefill": True}}, "kv_transfer_params"),
])
def test_invalid_completion_fields_get_vllms_400_without_reaching_an_instance(patch, needle):
    with live_rig() as rig, rig.client() as c:
        _wait_models(rig)
        r = c.post("/v1/completions", json={**completion(stream=False), **patch})
        _assert_vllm_error(r, 400, needle)
        assert not rig.fakes[0].requests_seen and not rig.fakes[1].requests_seen


@pytest.mark.parametrize("messages,needle", [
    ([1, 2], "messages[0] must be an object"),
    ([], "messages must be a non-empty list"),
    ("hi", "messages must be a non-empty list"),
    ([{"role": "wizard", "content": "hi"}], "messages[0].role"),
    ([{"content": "hi"}], "messages[0].role"),
    ([{"role": "user", "content": 7}], "messages[0].content"),
    ([{"role": "user", "content": [{"text": "no type"}]}], "messages[0].content"),
])
def test_malformed_chat_messages_get_a_400_without_reaching_an_instance(messages, needle):
    with live_rig() as rig, rig.client() as c:
        r = c.post("/v1/chat/completions", json={"model": "tiny", "messages": messages, "max_tokens": 4})
        _assert_vllm_error(r, 400, needle)
        assert not rig.fakes[0].requests_seen and not rig.fakes[1].requests_seen


def test_unknown_model_is_a_404_like_vllm():
    with live_rig() as rig, rig.client() as c:
        _wait_models(rig)
        r = c.post("/v1/completions", json={**completion(stream=False), "model": "nope"})
        _assert_vllm_error(r, 404, "The model `nope` does not exist.")
        assert r.json()["error"]["param"] == "model"
        r = c.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]})
        _assert_vllm_error(r, 404, "does not exist")
        assert c.post("/v1/completions", json=completion(stream=False)).status_code == 200


def test_a_body_over_the_cap_is_a_413_and_is_not_parsed():
    with live_rig(max_body_bytes=64 * 1024) as rig, rig.client() as c:
        r = c.post("/v1/completions", json={"model": "tiny", "prompt": "x" * 100_000, "max_tokens": 2})
        _assert_vllm_error(r, 413, "at most 65536")
        # Chunked (no Content-Length): counted while reading, refused as soon as it passes the cap.
        r = c.post("/v1/completions", content=iter([b'{"prompt": "' + b"x" * 40_000, b"x" * 40_000 + b'"}']))
        _assert_vllm_error(r, 413, "exceeds 65536")
        assert not rig.fakes[0].requests_seen and not rig.fakes[1].requests_seen


@pytest.mark.parametrize("bad_id", ["1", 1.0, True, None, [1]])
def test_admin_flip_refuses_ids_that_are_not_json_integers(bad_id):
    with live_rig(roles=["prefill", "decode", "decode"]) as rig, rig.client() as c:
        r = c.post("/roles", json={"id": bad_id, "role": "prefill"}, headers=AUTH)
        assert r.status_code in (400, 422) and r.json()["error"]["message"], r.text
        r = c.post("/roles", json={"flips": [{"id": bad_id, "role": "prefill"}]}, headers=AUTH)
        assert r.status_code in (400, 422), r.text
        assert [s.role.value for s in rig.router.state.instances] == ["prefill", "decode", "decode"]


@pytest.mark.parametrize("raw", [b'{"decode_load": NaN}', b'{"decode_load": Infinity}', b'{"prefill_load": 1e999}',
                                 b'{"decode_load": -1}', b'{"decode_load": "0.5"}'])
def test_signals_refuse_non_finite_or_negative_loads(raw):
    with live_rig(routing="arrow") as rig, rig.client() as c:
        r = c.post("/signals", content=raw, headers={**AUTH, "content-type": "application/json"})
        assert r.status_code in (400, 422), r.text
        assert rig.router.routing.state.decode_load is None and rig.router.routing.state.prefill_load is None
        assert c.post("/signals", json={"decode_load": 1, "prefill_load": 0.5}, headers=AUTH).status_code == 200
        assert (rig.router.routing.state.decode_load, rig.router.routing.state.prefill_load) == (1.0, 0.5)


@pytest.mark.parametrize("after", ["99999999999999999999", "-1", "1.5", "x", "10"])
def test_events_refuse_a_cursor_that_is_not_a_past_event(after):
    with live_rig() as rig, rig.client() as c:
        last = c.get("/events", params={"after": 0}, headers=AUTH).json()["last_seq"]
        assert last < 10
        r = c.get("/events", params={"after": after}, headers=AUTH)
        assert r.status_code == 400 and "'after'" in r.json()["error"]["message"]
        assert c.get("/events", params={"after": last}, headers=AUTH).json()["events"] == []


def test_request_records_and_flips_are_bounded_by_the_config():
    with live_rig(max_records=3, max_flips=2, event_log_size=100) as rig, rig.client() as c:
        for k in range(6):
            c.post("/v1/completions", json=completion(stream=False, seed=k)).raise_for_status()
        for k in range(3):
            a, b = ("decode", "prefill") if k % 2 == 0 else ("prefill", "decode")
            c.post("/roles", json={"flips": [{"id": 0, "role": a}, {"id": 1, "role": b}]},
                   headers=AUTH).raise_for_status()
        assert len(rig.router.records) == 3 and rig.router.completed == 6
        assert [r.request_id for r in rig.router.records] == [3, 4, 5]
        assert len(rig.router.state.flips) == 2
        state = c.get("/state", headers=AUTH).json()
        assert state["completed"] == 6 and len(state["flips"]) == 2


@pytest.mark.parametrize("prompt, needle", [
    ([1, True], "non-negative integers, got True"),
    ([False], "non-negative integers, got False"),
    ([1, 2.0], "non-negative integers, got 2.0"),
    ([1, -3], "non-negative integers, got -3"),
    ([1, None], "non-negative integers, got None"),
    ([1, 2**63], "non-negative integers"),
    ([1, 2**64], "non-negative integers"),
    ([1, 10**30], "non-negative integers"),
    ([1, "a"], "batch of prompts"),
    ([[1, 2], [3]], "batch of prompts"),
    ([1, {"x": 1}], "non-negative integers"),
])
def test_token_id_prompts_hold_only_non_negative_64_bit_integers(prompt, needle):
    from arrow_rl.cluster.live.validation import BadRequest, validate_request

    with pytest.raises(BadRequest, match=needle):
        validate_request({"prompt": prompt}, chat=False)
    assert validate_request({"prompt": [0, 7, 2**63 - 1]}, chat=False)[1] == 3


def test_arrow_routings_own_flip_log_is_bounded_too():
    with live_rig(routing="arrow", roles=["prefill", "decode", "decode"], max_flips=2) as rig, rig.client() as c:
        for k in range(6):
            role = "prefill" if k % 2 == 0 else "decode"
            c.post("/roles", json={"id": 1, "role": role}, headers=AUTH).raise_for_status()
        state = rig.router.routing.state
        assert state.flips_recorded == 6 and len(state.flip_log) <= 4  # cut back to 2 beyond twice the limit
        assert [e.role.value for e in state.flip_log][-1] == "decode"
