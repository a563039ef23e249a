"""Fault injection: stand-in instances in their own processes (started and supervised by the real
launcher, KV pulled over HTTP), a router in front, client load; SIGKILL, SIGSTOP/SIGCONT, slow
readers and abandoned clients. Default tier: no vLLM, about half a minute in all."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from arrow_rl.cluster.live.fake_vllm import expected_tokens
from arrow_rl.serving.faultbench import (FakeCluster, load, one_request, prompt, router_for, running_on,
                                              slow_readers, wait_until)

TOKENS = 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Three stand-ins (prefill, decode, decode), each in its own process, supervised."""
    with FakeCluster(tmp_path_factory.mktemp("faults"), n=3, decode_step_s=0.01) as cl:
        yield cl


def _all_healthy(cluster: FakeCluster, router) -> None:
    """Each test starts from a whole cluster (the previous one may have killed an instance)."""
    assert wait_until(lambda: all(i.process.poll() is None and not i.awaiting_health and i.restart_at is None
                                  for i in cluster.launcher.instances), 60), cluster.events
    assert wait_until(lambda: all(s.healthy for s in router.router.state.instances), 30)


def _set(url: str, **fields) -> None:
    httpx.post(url + "/fake/config", json=fields, timeout=10).raise_for_status()


@pytest.mark.parametrize("victim", [0, 1], ids=["prefill", "decode"])
def test_a_killed_instance_costs_no_request_that_had_not_started_streaming_and_comes_back(cluster, victim):
    with router_for(cluster) as rs:
        _all_healthy(cluster, rs)
        killed_at = []

        def fault() -> None:
            killed_at.append(time.monotonic())
            cluster.kill(victim)

        out = asyncio.run(load(rs.url, total=200, concurrency=50, max_tokens=TOKENS, during=fault))
        assert killed_at
        assert not [o for o in out if o.status == 503], "a 503 while each role kept a healthy instance"
        for k, o in enumerate(out):
            if o.ok:
                assert o.done and o.tokens == expected_tokens(prompt(k), TOKENS), k   # no corrupted token
            else:   # only a stream the dead instance was already sending may fail, with an error event
                assert o.started_streaming and o.status == 200 and "failed mid-stream" in o.error, (k, o)
        # the supervisor restarts it; the router's health checks put it back in rotation
        assert wait_until(lambda: cluster.back_event(victim, killed_at[0]) is not None, 60), cluster.events
        assert wait_until(lambda: rs.router.state.instances[victim].healthy, 30)
        assert cluster.back_event(victim, killed_at[0]) - killed_at[0] < 60
        assert all(s.num_prefill == 0 and s.num_decode == 0 for s in rs.router.state.instances)


@pytest.mark.parametrize("victim", [0, 1], ids=["prefill", "decode"])
def test_a_frozen_instance_is_failed_over_in_seconds_not_at_the_leg_timeouts(cluster, victim):
    """SIGSTOP for 10 s under load: legs waiting on it are moved once a health check fails (~2 s at
    the default health settings), so no request waits anywhere near the freeze (or the 30-120 s
    leg timeouts). The bound (8 s) leaves room for a loaded 2-core box; before the failover every
    leg sent to the frozen instance waited until it was thawed."""
    with router_for(cluster) as rs:
        _all_healthy(cluster, rs)
        frozen = []

        def fault() -> None:
            frozen.append(time.monotonic())
            cluster.freeze(victim)
            time.sleep(10)
            cluster.thaw(victim)

        out = asyncio.run(load(rs.url, total=120, concurrency=20, max_tokens=10, during=fault))
        waits = sorted(o.end - o.start for o in out)
        assert waits[-1] < 8, f"slowest request took {waits[-1]:.1f}s (freeze 10 s)"
        for k, o in enumerate(out):
            assert o.status == 200, (k, o)
            if not o.ok:   # only a stream the frozen instance had started, ended with an error event
                assert o.started_streaming and "failed mid-stream" in o.error, (k, o)
            else:
                assert o.tokens == expected_tokens(prompt(k), 10)
        assert rs.router.metrics.retries_prefill._value.get() + rs.router.metrics.retries_decode._value.get() >= 1
        assert wait_until(lambda: rs.router.state.instances[victim].healthy, 15)   # thawed: back in rotation


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_client_that_leaves_during_the_prefill_leg_frees_the_prefill_instance(cluster, stream):
    p = cluster.urls[0]
    with router_for(cluster) as rs:
        _all_healthy(cluster, rs)
        _set(p, prefill_s_per_token=0.02)   # a 500-token prefill takes 10 s
        try:
            async def leave() -> None:
                async with httpx.AsyncClient() as c:
                    await one_request(c, rs.url, 7, 5, stream=stream, prompt_len=500, timeout_s=1.0)

            asyncio.run(leave())
            freed = wait_until(lambda: running_on(p) == 0, 5)
            assert freed is not None, "the prefill leg kept running after its client left"
            assert wait_until(lambda: rs.router.completed == 1, 5)
            rec = rs.router.records[-1]
            assert rec.rejected and rec.reject_reason == "client disconnected"
            assert rs.router.state.instances[0].num_prefill == 0
        finally:
            _set(p, prefill_s_per_token=0.0)


def test_a_client_that_leaves_a_whole_request_during_its_decode_frees_the_decode_slot(cluster):
    decoders = cluster.urls[1:]
    with router_for(cluster) as rs:
        _all_healthy(cluster, rs)
        for u in decoders:
            _set(u, decode_step_s=0.05)   # 200 tokens: 10 s
        try:
            async def leave() -> None:
                async with httpx.AsyncClient() as c:
                    await one_request(c, rs.url, 3, 200, stream=False, timeout_s=1.0)

            asyncio.run(leave())
            assert wait_until(lambda: sum(running_on(u) for u in decoders) == 0, 5), "decode kept running"
            assert wait_until(lambda: rs.router.completed == 1, 5)
            rec = rs.router.records[-1]
            assert rec.rejected and rec.reject_reason == "client disconnected"   # not journaled as 200
            assert all(s.num_decode == 0 for s in rs.router.state.instances)
        finally:
            for u in decoders:
                _set(u, decode_step_s=0.01)


def test_slow_readers_hold_no_decode_slot_beyond_the_write_timeout(cluster):
    """Five clients read 256 bytes of a long stream and stop: each is dropped write_timeout_s after
    its output backed up, its decode leg closed (the slot freed) and journaled 499, not 200.
    (A lenient health timeout: a stand-in streaming flat out on a loaded 2-core box can stall
    past the default 0.75 s, and this test is not about failover.)"""
    decoders = cluster.urls[1:]
    with router_for(cluster, write_timeout_s=1.0, health_timeout_s=5.0) as rs:
        _all_healthy(cluster, rs)
        for u in decoders:
            _set(u, decode_step_s=0.002)
        socks = []
        try:
            body = json.dumps({"model": "tiny", "prompt": prompt(1), "max_tokens": 3000, "stream": True,
                               "ignore_eos": True, "return_token_ids": True, "logprobs": 1}).encode()
            socks = slow_readers(rs.url, body, 5)
            st = rs.router.state
            assert wait_until(lambda: rs.router.completed == 5, 30), [s.num_decode for s in st.instances]
            assert all(s.num_decode == 0 for s in st.instances)
            assert wait_until(lambda: sum(running_on(u) for u in decoders) == 0, 5)
            recs = list(rs.router.records)
            assert all(r.rejected and "write_timeout_s" in r.reject_reason for r in recs), \
                [r.reject_reason for r in recs]
            assert rs.front.write_timeouts == 5 and not rs.front.connections
        finally:
            for s in socks:
                s.close()
            for u in decoders:
                _set(u, decode_step_s=0.01)
