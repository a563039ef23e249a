"""Limits that keep one client or one admin caller from costing the router without bound: the
connection cap, bounded flip-source labels, the Bearer scheme in any case, scaled leg deadlines,
health checks that notice a hung instance fast, and legs moved off an instance that leaves rotation."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from arrow_rl.cluster.live.fake_vllm import FakeConfig, expected_tokens
from live_fixtures import AUTH, TOKEN, completion, live_rig


def test_a_connection_over_the_cap_gets_a_503_and_a_close_and_the_others_keep_working():
    with live_rig(max_client_connections=3) as rig:
        held = [socket.create_connection(("127.0.0.1", rig.router_server.port), timeout=10) for _ in range(3)]
        try:
            deadline = time.time() + 10
            while len(rig.router_server.front.connections) < 3 and time.time() < deadline:
                time.sleep(0.02)
            with socket.create_connection(("127.0.0.1", rig.router_server.port), timeout=10) as extra:
                data = b""
                while chunk := extra.recv(65536):
                    data += chunk
            assert data.startswith(b"HTTP/1.1 503") and b"max_client_connections" in data
            assert rig.router_server.front.refused == 1
        finally:
            for s in held:
                s.close()
        deadline = time.time() + 10
        while rig.router_server.front.connections and time.time() < deadline:
            time.sleep(0.02)
        with rig.client() as c:   # slots are free again
            assert c.post("/v1/completions", json=completion(stream=False)).status_code == 200


@pytest.mark.parametrize("source", ["x" * 65, "a b", "bad\nline", "", "é"])
def test_a_flip_source_that_is_not_a_short_plain_label_is_a_422_naming_the_field(source):
    with live_rig(roles=["prefill", "decode", "decode"]) as rig, rig.client() as c:
        r = c.post("/roles", json={"id": 1, "role": "prefill", "source": source}, headers=AUTH)
        assert r.status_code == 422 and "source" in r.json()["error"]["message"]
        assert [s.role.value for s in rig.router.state.instances] == ["prefill", "decode", "decode"]


def test_flip_source_labels_are_a_bounded_set():
    """200 flips with distinct sources: /metrics keeps max_flip_sources label values plus 'other'."""
    with live_rig(roles=["prefill", "decode", "decode"], max_flip_sources=4) as rig, rig.client() as c:
        size0 = len(c.get("/metrics").text)
        for k in range(200):
            role = "prefill" if k % 2 == 0 else "decode"
            r = c.post("/roles", json={"id": 1, "role": role, "source": f"ctl-{k}"}, headers=AUTH)
            assert r.status_code == 200, r.text
        text = c.get("/metrics").text
        sources = {line.split('source="')[1].split('"')[0] for line in text.splitlines()
                   if line.startswith("arrow_router_flips_total{")}
        assert sources == {"ctl-0", "ctl-1", "ctl-2", "ctl-3", "other"}
        assert 'arrow_router_flips_total{source="other"} 196.0' in text
        assert len(text) - size0 < 2000


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(scheme):
    with live_rig() as rig, rig.client() as c:
        assert c.get("/roles", headers={"Authorization": f"{scheme} {TOKEN}"}).status_code == 200
        assert c.get("/roles", headers={"Authorization": f"{scheme} wrong"}).status_code == 403
        assert c.get("/roles", headers={"Authorization": f"{scheme}"}).status_code == 401
        assert c.get("/roles", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401


def test_leg_deadlines_scale_with_the_work_and_stop_at_their_caps():
    with live_rig(leg_timeout_base_s=10, prefill_timeout_per_token_s=0.01, prefill_timeout_s=50) as rig:
        r = rig.router
        assert r._leg_timeout(0, 0.01, 50) == 10
        assert r._leg_timeout(1000, 0.01, 50) == pytest.approx(20)
        assert r._leg_timeout(100_000, 0.01, 50) == 50


def test_a_hung_instance_leaves_rotation_within_two_seconds_at_the_default_health_settings():
    """Default health_interval_s / health_timeout_s / unhealthy_after_failures (the rig's own are
    faster): an instance whose /health stops answering is out within about 2 s."""
    with live_rig(roles=["prefill", "decode", "decode"], health_interval_s=0.5, unhealthy_after_failures=2) as rig:
        cfg = rig.router.config
        assert (cfg.health_interval_s, cfg.health_timeout_s, cfg.unhealthy_after_failures) == (0.5, 0.75, 2)
        s = rig.router.state.instances[2]
        deadline = time.time() + 10
        while rig.router.models is None and time.time() < deadline:
            time.sleep(0.05)
        rig.fakes[2].config.hang = rig.fakes[2].config.hang_health = True
        t0 = time.time()
        while s.healthy and time.time() - t0 < 10:
            time.sleep(0.02)
        took = time.time() - t0
        assert not s.healthy and took < 3.0, f"noticed after {took:.1f}s"


def test_legs_waiting_on_an_instance_are_moved_when_it_leaves_rotation():
    """A decode instance that accepts legs and never answers: once it is marked unhealthy its legs
    are retried on the other decode instance at once, long before any leg timeout."""
    cfg = [FakeConfig(), FakeConfig(hang=True), FakeConfig()]
    with live_rig(roles=["prefill", "decode", "decode"], configs=cfg, health_interval_s=60) as rig:
        import concurrent.futures

        router = rig.router
        with concurrent.futures.ThreadPoolExecutor(4) as ex, httpx.Client(base_url=rig.url, timeout=60) as c:
            futs = [ex.submit(c.post, "/v1/completions", json=completion(seed=k, stream=k % 2 == 0))
                    for k in range(4)]
            # every request has either finished on instance 2 or is stuck on the hung instance 1
            deadline = time.time() + 20
            while (router.state.arrivals < 4 or len(router._waiting[1]) + router.completed < 4) \
                    and time.time() < deadline:
                time.sleep(0.02)
            stuck = len(router._waiting[1])
            assert stuck >= 1 and stuck + router.completed == 4
            t0 = time.time()
            rig.router_server.loop.call_soon_threadsafe(router.state.mark_unhealthy, router.state.instances[1], "test")
            results = [f.result(timeout=30) for f in futs]
            assert time.time() - t0 < 10
        for k, r in enumerate(results):
            assert r.status_code == 200, r.text
            if k % 2:
                assert r.json()["choices"][0]["token_ids"] == expected_tokens(completion(seed=k)["prompt"], 8)
        recs = list(router.records)
        assert all(not x.rejected and x.decode_instance == 2 for x in recs)
        assert sum("leg moved" in " ".join(e[2]["notes"]) for e in router.state.events if e[1] == "finish") == stuck
        assert not router._waiting[1]


@pytest.mark.parametrize("end_silent", [True, False])
def test_a_silent_stream_on_an_instance_leaving_rotation_ends_now_or_waits_as_configured(end_silent):
    cfg = [FakeConfig(), FakeConfig(decode_step_s=1.5)]
    with live_rig(configs=cfg, health_interval_s=60, health_timeout_s=0.3, end_silent_streams=end_silent) as rig, \
            httpx.Client(base_url=rig.url, timeout=60) as c:
        router = rig.router
        with c.stream("POST", "/v1/completions", json=completion(max_tokens=3)) as r:
            lines = r.iter_lines()
            first = next(ln for ln in lines if ln.startswith("data: {"))   # the first token is out
            assert "token_ids" in first
            time.sleep(0.5)   # silent longer than health_timeout_s (the next token is 1.5 s away)
            t0 = time.time()
            rig.router_server.loop.call_soon_threadsafe(router.state.mark_unhealthy, router.state.instances[1], "t")
            rest = list(lines)
        took = time.time() - t0
        text = "\n".join(rest)
        if end_silent:
            assert "failed mid-stream" in text and took < 1.0
        else:
            assert "error" not in text and text.count("token_ids") == 2 and took > 1.0


def test_a_controller_whose_name_is_not_a_valid_label_still_flips():
    """deploy sends the controller's name as the flip source; a checkpoint folder named with
    spaces or accents is made a valid label on the client side, not refused."""
    from arrow_rl.cluster.base import Flip, Role
    from arrow_rl.cluster.live.cluster import LiveCluster, label_safe

    assert label_safe("ckpt:my run (v2) é") == "ckpt:my_run__v2___" and label_safe("") == "controller"
    assert len(label_safe("x" * 500)) == 64
    with live_rig(roles=["prefill", "decode", "decode"]) as rig:
        cl = LiveCluster(rig.url, TOKEN, scrape=False)
        try:
            res = cl.flip_many([Flip(1, Role.PREFILL)], source="ckpt:my run (v2)")
        finally:
            cl.close()
        assert res["applied"] and rig.router.state.flips[-1].source == "ckpt:my_run__v2_"
