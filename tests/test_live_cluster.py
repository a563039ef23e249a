"""LiveCluster windows and the deploy control loop against fake instances."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from typing import Iterator

import pytest

from arrow_rl.cluster.base import Flip, Role
from arrow_rl.cluster.live.cluster import LiveCluster, RouterAPIError
from arrow_rl.cluster.live.fake_vllm import FakeConfig
from arrow_rl.cluster.live.splits import flips_to_split
from arrow_rl.serving.deploy import run_control_loop
from live_fixtures import TOKEN, completion, live_rig, read_stream


def _load(rig, n: int, max_tokens: int = 8, stream: bool = True) -> None:
    def one(k):
        with rig.client() as c:
            with c.stream("POST", "/v1/completions", json=completion(max_tokens=max_tokens, seed=k, stream=stream)) as r:
                read_stream(r) if stream else r.read()
    ts = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)


@contextlib.contextmanager
def _continuous_load(rig, workers: int = 3, max_tokens: int = 20) -> Iterator[None]:
    """Keep ``workers`` streams in flight for the body of the ``with`` (decode-heavy: long outputs)."""
    stop = threading.Event()

    def worker(w):
        k = 0
        with rig.client() as c:
            while not stop.is_set():
                with c.stream("POST", "/v1/completions", json=completion(max_tokens=max_tokens, seed=w * 1000 + k)) as r:
                    read_stream(r)
                k += 1
    ts = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in ts:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in ts:
            t.join(30)


def test_live_cluster_window_counts_arrivals_finishes_and_latencies():
    with live_rig() as rig:
        cl = LiveCluster(rig.url, TOKEN)
        _load(rig, 5)
        w = cl.advance(0.3)
        assert w.arrivals == 5 and w.finished == 5 and w.rejected == 0
        assert w.prefill.first_tokens == 5 and w.prefill.ttft_mean > 0
        assert w.decode.tpot_mean > 0 and w.decode.itl_mean > 0
        assert w.instances[1].decode_tokens_generated == 40  # scraped vllm:generation_tokens_total delta
        assert w.prefill.num_instances == 1 and w.decode.num_instances == 1
        assert len(cl.completed()) == 5 and all(r.finished for r in cl.completed())
        # The next window starts where this one ended and is empty.
        w2 = cl.advance(0.1)
        assert w2.start_s == pytest.approx(w.end_s) and w2.arrivals == 0 and w2.finished == 0
        cl.close()


def test_live_cluster_advance_waits_wall_time():
    with live_rig() as rig:
        cl = LiveCluster(rig.url, TOKEN, scrape=False)
        t = time.monotonic()
        w = cl.advance(0.4)
        assert time.monotonic() - t >= 0.39 and w.duration_s >= 0.39
        cl.close()


def test_live_cluster_decode_load_is_itl_over_slo():
    cfg = [FakeConfig(), FakeConfig(decode_step_s=0.02)]
    with live_rig(configs=cfg, slo_tpot_s=0.01) as rig:
        cl = LiveCluster(rig.url, TOKEN)
        _load(rig, 2, max_tokens=6)
        w = cl.advance(0.1)
        # Arrow §5.5: decode load = mean token latency in the window / SLO_TPOT (≈ 20 ms / 10 ms).
        assert w.decode.load == pytest.approx(w.instances[1].itl_mean / 0.01)
        # The fake sleeps 20 ms a step, so ITL >= 20 ms; a loaded machine only makes it longer.
        assert w.decode.load > 1.5
        assert w.tpot_violations == 2
        cl.close()


def test_live_cluster_flip_and_rejected_flip():
    with live_rig(roles=["prefill", "decode", "decode"]) as rig:
        cl = LiveCluster(rig.url, TOKEN, scrape=False)
        cl.flip(1, Role.PREFILL)
        assert cl.roles() == (Role.PREFILL, Role.PREFILL, Role.DECODE)
        with pytest.raises(RouterAPIError, match="empty the decode pool"):
            cl.flip(2, Role.PREFILL)
        assert cl.roles() == (Role.PREFILL, Role.PREFILL, Role.DECODE)
        cl.close()


def test_live_cluster_info_carries_slo_and_profiles():
    with live_rig(slo_ttft_s=1.5, slo_tpot_s=0.05) as rig:
        cl = LiveCluster(rig.url, TOKEN, scrape=False)
        assert cl.info.slo.ttft_s == 1.5 and cl.info.slo.tpot_s == 0.05
        assert cl.info.num_instances == 2 and cl.info.extra["profiles"][0].prefill_c == pytest.approx(0.001)
        cl.close()


class StaticController:
    name = "static-test"

    def reset(self, info):
        self.calls = 0

    def act(self, state):
        self.calls += 1
        return []


class DecodeHungryController:
    """Arrow-like: flip one prefill instance to decode when decode load ≥ 1 (Alg. 2 trigger)."""

    name = "decode-hungry"

    def reset(self, info):
        pass

    def act(self, state):
        if state.window.decode.load >= 1.0:
            prefill = [v.instance_id for v in state.instances if v.role is Role.PREFILL]
            if len(prefill) > 1:
                return [Flip(max(prefill), Role.DECODE)]
        return []


def test_deploy_loop_with_static_controller_never_flips():
    with live_rig() as rig:
        cl = LiveCluster(rig.url, TOKEN, scrape=False)
        ctl = StaticController()
        log: list[dict] = []
        stats = run_control_loop(cl, ctl, 0.1, steps=3, log=log.append)
        assert stats.steps == 3 and ctl.calls == 3 and stats.flips_applied == 0
        assert [e["step"] for e in log] == [1, 2, 3] and "LD" in log[0]["obs"]
        cl.close()


def test_deploy_loop_flips_toward_decode_under_decode_heavy_load():
    cfg = [FakeConfig(decode_step_s=0.02) for _ in range(3)]
    with live_rig(roles=["prefill", "prefill", "decode"], configs=cfg, slo_tpot_s=0.01) as rig:
        cl = LiveCluster(rig.url, TOKEN, scrape=False)
        with _continuous_load(rig):
            stats = run_control_loop(cl, DecodeHungryController(), 0.5, steps=4, act_timeout_s=10)
        assert stats.flips_applied == 1
        assert cl.roles() == (Role.PREFILL, Role.DECODE, Role.DECODE)
        cl.close()


class Crashing:
    name = "crashing"

    def reset(self, info):
        pass

    def act(self, state):
        raise RuntimeError("boom")


class Slow:
    name = "slow"

    def reset(self, info):
        pass

    def act(self, state):
        time.sleep(0.5)
        return [Flip(0, Role.DECODE), Flip(1, Role.PREFILL)]


@pytest.mark.parametrize("controller,counter", [(Crashing(), "controller_errors"), (Slow(), "controller_timeouts")])
def test_crashing_or_slow_controller_leaves_the_split_unchanged(controller, counter):
    with live_rig() as rig:
        cl = LiveCluster(rig.url, TOKEN, scrape=False)
        stats = run_control_loop(cl, controller, 0.1, steps=2, act_timeout_s=0.1)
        assert getattr(stats, counter) >= 1 and stats.flips_applied == 0
        assert cl.roles() == (Role.PREFILL, Role.DECODE)
        assert stats.decisions[0]["error"]
        cl.close()


def test_rejected_flip_is_logged_and_the_loop_goes_on():
    class EmptyDecode:
        name = "bad"
        def reset(self, info): pass
        def act(self, state): return [Flip(1, Role.PREFILL)]
    with live_rig() as rig:
        cl = LiveCluster(rig.url, TOKEN, scrape=False)
        stats = run_control_loop(cl, EmptyDecode(), 0.05, steps=2)
        assert stats.steps == 2 and stats.flips_rejected == 2
        assert "empty the decode pool" in stats.decisions[0]["error"]
        cl.close()


def test_flips_to_split():
    P, D = Role.PREFILL, Role.DECODE
    assert flips_to_split([P, P, P, D], 1) == [Flip(2, D), Flip(1, D)]
    assert flips_to_split([P, D, D, D], 3) == [Flip(1, P), Flip(2, P)]
    assert flips_to_split([P, D], 1) == []


def test_deploy_with_the_arrow_monitor_flips_toward_decode_under_decode_heavy_load():
    from arrow_rl.arrow import ArrowConfig
    from arrow_rl.controllers.registry import make_policy

    policy = make_policy("arrow", 3, arrow_config=ArrowConfig(update_interval_s=0.25, sustain_count=2))
    cfg = [FakeConfig(decode_step_s=0.02) for _ in range(3)]
    with live_rig(roles=["prefill", "prefill", "decode"], configs=cfg, slo_tpot_s=0.01) as rig:
        cl = LiveCluster(rig.url, TOKEN, scrape=False)
        with _continuous_load(rig):
            stats = run_control_loop(cl, policy.controller, 0.5, steps=6, act_timeout_s=10)
        # Alg. 2: LD ≥ L_EXPAND held for sustain_count passes → one P→D flip (Alg. 3 picks it).
        assert stats.flips_applied >= 1
        assert cl.num_prefill() == 1
        cl.close()


def test_pd_cluster_env_runs_unchanged_on_the_live_cluster():
    import numpy as np

    from arrow_rl.cluster.live.cluster import live_cluster_factory
    from arrow_rl.workload.workload import Workload
    from envs.pd_cluster_env import PDClusterEnv

    wl = Workload(np.linspace(0.0, 0.6, 6), np.full(6, 150), np.full(6, 6), name="tiny")
    with live_rig(roles=["prefill", "decode"]) as rig:
        env = PDClusterEnv({"num_instances": 2, "control_interval_s": 0.4, "episode": {"drain_s": 1.2}},
                           cluster_factory=live_cluster_factory(rig.url, TOKEN))
        obs, info = env.reset(seed=0, options={"workload": wl})
        assert env.observation_space.contains(obs)
        truncated = terminated = False
        steps = 0
        while not (truncated or terminated) and steps < 10:
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample() * 0)
            steps += 1
        env.cluster.replay_thread.join(10)
        assert terminated and not truncated  # the horizon ends the episode: terminal (PDClusterEnv docstring)
        assert len(env.cluster.completed()) == 6 and all(r.finished for r in env.cluster.completed())
        env.cluster.close()


def test_a_live_env_reset_sets_the_episodes_mixed_pool_too():
    """The live factory starts each episode from the env's P:D:M split, as the emulator does: the
    episode's ``emulator.num_mixed`` MIXED instances, and none left over for a P/D episode."""
    from types import SimpleNamespace

    from arrow_rl.cluster.live.cluster import live_cluster_factory

    P, D, M = Role.PREFILL, Role.DECODE, Role.MIXED
    with live_rig(roles=["prefill", "prefill", "decode"]) as rig:
        factory = live_cluster_factory(rig.url, TOKEN, replay=False, scrape=False)
        cl = factory(None, SimpleNamespace(emulator={"num_mixed": 1}), None, 1, 0)
        assert sorted(cl.roles()) == sorted([P, D, M])
        cl.close()
        cl = factory(None, SimpleNamespace(emulator={}), None, 1, 0)   # a P/D episode after a mixed one
        assert sorted(cl.roles()) == sorted([P, D, D])
        cl.close()


def test_deploy_loop_survives_a_router_outage_then_gives_up_clearly():
    from arrow_rl.serving.deploy import ClusterUnreachable

    with live_rig() as rig:
        cl = LiveCluster(rig.url, TOKEN, scrape=False)
        rig.router_server.stop()
        log: list[dict] = []
        with pytest.raises(ClusterUnreachable, match="gave up after 3"):
            run_control_loop(cl, StaticController(), 0.05, steps=10, log=log.append, max_failures=3)
        assert len(log) == 3 and all("cannot read the cluster" in e["error"] for e in log)
        cl.close()


def test_deploy_runs_a_learned_checkpoint_on_the_live_cluster():
    from pathlib import Path

    from arrow_rl.controllers.registry import make_policy

    ckpt = Path(__file__).resolve().parents[1] / "agents/checkpoints/default"
    if not ckpt.exists():
        pytest.skip("no shipped checkpoint")
    policy = make_policy(str(ckpt), 8)
    with live_rig(roles=["prefill"] * 4 + ["decode"] * 4) as rig:
        cl = LiveCluster(rig.url, TOKEN)
        with _continuous_load(rig, workers=2, max_tokens=8):
            stats = run_control_loop(cl, policy.controller, 0.3, steps=3, act_timeout_s=20)
        assert stats.steps == 3 and stats.controller_errors == 0 and stats.controller_timeouts == 0
        assert all(e["error"] is None for e in stats.decisions)
        cl.close()


def test_the_deploy_side_keeps_only_the_newest_records_and_flip_events():
    from live_fixtures import AUTH

    with live_rig(roles=["prefill", "decode", "decode"]) as rig, rig.client() as c:
        cl = LiveCluster(rig.url, TOKEN, scrape=False, max_records=3, max_flip_events=2)
        for k in range(5):
            c.post("/v1/completions", json=completion(stream=False, seed=k)).raise_for_status()
        for role in ("prefill", "decode", "prefill"):
            c.post("/roles", json={"id": 1, "role": role}, headers=AUTH).raise_for_status()
        window = cl.collect()
        assert window.finished == 5  # the window counts every request...
        assert len(cl.completed()) == 3 and cl.flip_events_total == 3 and len(cl.flip_events) == 2  # ...memory the newest
        assert [e["new"] for e in cl.flip_events] == ["decode", "prefill"]
        cl.close()


def test_the_arrow_clock_sync_reads_each_flip_event_once_from_a_bounded_log():
    import collections
    import math
    from types import SimpleNamespace

    from arrow_rl.arrow.config import ArrowState
    from arrow_rl.serving.deploy import _sync_arrow_clock

    ctrl = SimpleNamespace(name="arrow", state=ArrowState())
    cl = SimpleNamespace(flip_events=collections.deque(maxlen=2), flip_events_total=0)

    def flip(t: float, new: str) -> None:
        cl.flip_events.append({"t": t, "new": new, "source": "alg1"})
        cl.flip_events_total += 1

    flip(1.0, "decode")
    seen = _sync_arrow_clock(ctrl, cl, 0)
    assert (seen, ctrl.state.last_p2d_flip_s) == (1, 1.0)
    for t in (2.0, 3.0, 4.0):  # more than the log keeps arrive between two reads
        flip(t, "prefill")
    flip(5.0, "decode")
    seen = _sync_arrow_clock(ctrl, cl, seen)
    assert (seen, ctrl.state.last_p2d_flip_s) == (5, 5.0)
    ctrl.state.last_p2d_flip_s = -math.inf
    assert _sync_arrow_clock(ctrl, cl, seen) == 5 and ctrl.state.last_p2d_flip_s == -math.inf  # nothing read twice


def test_live_cluster_implements_what_evaluation_reads_ended_since_first_token_s_flip_history():
    """The ``Cluster`` interface the evaluation's early stop and flip accounting read, on a live
    cluster: requests in the order they ended, their first tokens by id, and every effective flip."""
    with live_rig(roles=["prefill", "decode", "decode"]) as rig:
        cl = LiveCluster(rig.url, TOKEN, scrape=False, max_records=5)
        assert cl.ended_since(0) == [] and cl.flip_history() == [] and math.isnan(cl.first_token_s(0))
        _load(rig, 4)
        cl.flip_many([Flip(2, Role.PREFILL)], source="test")
        cl.advance(0.2)
        ended = cl.ended_since(0)
        assert len(ended) == 4 and list(cl.completed()) == ended and cl.ended_since(3) == ended[3:]
        for r in ended:
            assert r.finished and cl.first_token_s(r.request_id) == r.first_token_s >= r.arrival_s
        (t, instance, role), = cl.flip_history()
        assert (instance, role) == (2, Role.PREFILL) and 0.0 <= t <= cl.now
        assert math.isnan(cl.first_token_s(10_000))   # never seen
        _load(rig, 3)
        cl.advance(0.2)
        # 7 ended, the newest 5 kept: a caller that has seen 4 gets the 3 that ended since
        assert [r.request_id for r in cl.ended_since(4)] == [r.request_id for r in list(cl.completed())[-3:]]
        assert len(cl.ended_since(0)) == 5
        cl.close()


def test_evaluation_runs_unchanged_on_the_live_cluster():
    """``run_on_cluster`` (the suite's and ``arrow-rl evaluate``'s control loop) needs nothing the live
    cluster lacks: load generation (the replay thread) is all a live evaluation adds."""
    import numpy as np

    from arrow_rl.controllers.registry import make_policy
    from arrow_rl.evaluation.runner import run_on_cluster
    from arrow_rl.workload.workload import Workload

    wl = Workload(np.linspace(0.0, 1.0, 8), np.full(8, 150), np.full(8, 6), name="tiny")
    with live_rig(roles=["prefill", "decode"]) as rig:
        cl = LiveCluster(rig.url, TOKEN)
        cl.start_replay(wl)
        result = run_on_cluster(cl, wl, cl.info.slo, make_policy("arrow", 2), 0.4)
        cl.replay_thread.join(10)
        assert result.num_requests == 8 and result.finished == 8
        assert 0.0 <= result.attainment <= 1.0 and result.sim_end_s >= 1.0
        assert [r.finished for r in result.records] == [True] * 8
        assert all(f.source in ("controller", "alg1") for f in result.flips)
        cl.close()
