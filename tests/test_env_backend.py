"""Backend neutrality: PDClusterEnv runs on any ``Cluster`` a factory returns (the live backend's
seat), using nothing but the interface. The double below is a test fixture, not an emulator: every
request finishes in the window it arrives in, within SLO iff the split is the one it "wants"."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

from arrow_rl.cluster.base import (SLO, Cluster, ClusterInfo, InstanceView, InstanceWindowStats, MetricsWindow, Mode,
                                   PoolStats, RequestRecord, Role)
from arrow_rl.workload.workload import Workload
from envs import PDClusterEnv


class SplitCluster(Cluster):
    """Requests meet their SLO only while exactly ``best_prefill`` instances are prefill."""

    def __init__(self, workload: Workload, n: int, num_prefill: int, slo: SLO, best_prefill: int) -> None:
        self.wl, self.n, self.slo, self.best = workload, n, slo, best_prefill
        self.roles = [Role.PREFILL if i < num_prefill else Role.DECODE for i in range(n)]
        self.t = 0.0
        self.next = 0
        self.records: list[RequestRecord] = []
        self.flip_log: list[tuple[float, int, Role]] = []

    @property
    def now(self) -> float:
        return self.t

    @property
    def info(self) -> ClusterInfo:
        return ClusterInfo(self.n, "fake", self.slo, Mode.DISAGGREGATED, tuple(self.roles))

    def instances(self) -> Sequence[InstanceView]:
        return [InstanceView(i, r, 0, 0, 0.0, 0, 0, 0, 1000) for i, r in enumerate(self.roles)]

    def flip(self, instance_id: int, role: Role) -> None:
        self.roles[instance_id] = Role(role)
        self.flip_log.append((self.t, instance_id, Role(role)))

    def advance(self, dt: float) -> MetricsWindow:
        start, self.t = self.t, self.t + dt
        good = sum(r is Role.PREFILL for r in self.roles) == self.best
        hi = int(np.searchsorted(self.wl.arrival_s, self.t, side="left"))
        for k in range(self.next, hi):
            a = float(self.wl.arrival_s[k])
            ttft = 0.1 if good else 10 * self.slo.ttft_s
            self.records.append(RequestRecord(k, a, int(self.wl.input_tokens[k]), 1, 0, 0, a + ttft, a + ttft))
        n_new, self.next = hi - self.next, hi
        stats = tuple(InstanceWindowStats(i, r) for i, r in enumerate(self.roles))
        return MetricsWindow(start, self.t, PoolStats(), PoolStats(), stats, arrivals=n_new, finished=n_new,
                             finished_within_slo=n_new if good else 0, ttft_violations=0 if good else n_new)

    def completed(self) -> Sequence[RequestRecord]:
        return self.records

    def ended_since(self, start: int) -> Sequence[RequestRecord]:
        return self.records[start:]

    def first_token_s(self, request_id: int) -> float:
        return next((r.first_token_s for r in self.records if r.request_id == request_id), float("nan"))

    def flip_history(self) -> Sequence[tuple[float, int, Role]]:
        return list(self.flip_log)

    @property
    def done(self) -> bool:
        return self.next >= len(self.wl)


def workload(n=40, span=10.0):
    return Workload(np.linspace(0.0, span, n, endpoint=False), np.full(n, 100), np.ones(n, dtype=int))


def factory(best):
    def make(wl, cfg, router, num_prefill, seed):
        return SplitCluster(wl, cfg.num_instances, num_prefill, SLO(cfg.slo_ttft_s, cfg.slo_tpot_s), best)
    return make


def env(best=5, **kw):
    return PDClusterEnv(dict(num_instances=8, teacher=None, episode={"duration_s": 10.0, "drain_s": 0.0}, **kw),
                        cluster_factory=factory(best))


def test_env_drives_any_cluster_through_the_interface():
    e = env(best=5)
    obs, info = e.reset(seed=0, options={"workload": workload()})
    assert e.observation_space.contains(obs)
    assert info["num_prefill"] == 4
    obs, r, term, trunc, info = e.step(3)  # move one decode instance to prefill → 5 prefill
    assert info["applied_flips"] and e.cluster.roles.count(Role.PREFILL) == 5
    assert not term


def test_flips_are_applied_before_the_interval_is_advanced():
    e = env()
    e.reset(seed=0, options={"workload": workload()})
    t0 = e.cluster.now
    e.step(1)
    assert e.cluster.flip_log[0][0] == pytest.approx(t0)
    assert e.cluster.now == pytest.approx(t0 + 1.0)


def test_episode_terminates_once_its_workload_is_served():
    # Every request is served by the window end: nothing is left to decide, a terminal state, on
    # which SB3 must not bootstrap (it would on truncated).
    e = env()
    e.reset(seed=0, options={"workload": workload(), "duration_s": 10.0})
    steps, term = 0, False
    while not term:
        _, _, term, trunc, info = e.step(0)
        assert not trunc
        steps += 1
    assert steps == 9  # reset advanced the first second
    assert info["slo_attainment"] == 0.0 and info["flip_count"] == 0
    with pytest.raises(RuntimeError, match="reset"):
        e.step(0)


def test_the_right_split_earns_more_than_the_wrong_one():
    """Reward sign sanity on a backend where the right answer is known: 5 prefill is best."""
    returns = {}
    for name, first in (("right", 3), ("wrong", 0)):
        e = env(best=5)
        e.reset(seed=0, options={"workload": workload(), "duration_s": 10.0})
        total, term, a = 0.0, False, first
        while not term:
            _, r, term, _, info = e.step(a)
            total += r
            a = 0
        returns[name] = (total, info["slo_attainment"])
    assert returns["right"][0] > 0 > returns["wrong"][0]
    assert returns["right"][1] > 0.8 and returns["wrong"][1] == 0.0


def test_invalid_action_is_a_flagged_noop():
    e = env(initial_prefill=1)
    e.reset(seed=0, options={"workload": workload()})
    assert not e.action_masks()[1]
    _, _, _, _, info = e.step(1)  # would empty the prefill pool
    assert info["invalid_action"] and info["applied_flips"] == []
    assert e.cluster.roles.count(Role.PREFILL) == 1
