"""Reward terms (no cluster needed); the end-to-end sign sanity test lives in test_env_episodes.py."""

from __future__ import annotations

import pytest

from arrow_rl.cluster.base import MetricsWindow, PoolStats
from envs.config import RewardConfig
from envs.reward import step_reward


def w(finished=0, within=0, rejected=0, pending=0):
    return MetricsWindow(0.0, 1.0, PoolStats(), PoolStats(), (), arrivals=0, finished=finished,
                         finished_within_slo=within, rejected=rejected, pending_predicted_ttft_misses=pending)


def test_requests_within_slo_earn_one_per_offered_request():
    t = step_reward(w(finished=4, within=4), 0, offered_per_step=4.0, config=RewardConfig())
    assert t.reward == pytest.approx(1.0)


def test_late_and_rejected_requests_are_penalised():
    cfg = RewardConfig(violation_penalty=1.0, pending_miss_penalty=0.0)
    t = step_reward(w(finished=4, within=1, rejected=1), 0, 2.0, cfg)
    assert t.good == 1 and t.bad == 4
    assert t.reward == pytest.approx((1 - 4) / 2.0)


def test_queued_predicted_misses_are_penalised_before_they_finish():
    cfg = RewardConfig(pending_miss_penalty=0.5)
    assert step_reward(w(pending=4), 0, 2.0, cfg).reward == pytest.approx(-1.0)


def test_unfinished_requests_at_the_end_count_as_misses():
    cfg = RewardConfig(violation_penalty=1.0, pending_miss_penalty=0.0)
    assert step_reward(w(), 0, 1.0, cfg, unfinished_at_end=3).reward == pytest.approx(-3.0)


def test_flip_penalty_is_per_flip_and_off_by_default():
    assert step_reward(w(), 2, 1.0, RewardConfig()).reward == 0.0
    assert step_reward(w(), 2, 1.0, RewardConfig(flip_penalty=0.01)).reward == pytest.approx(-0.02)


def test_episode_return_is_affine_in_attainment_without_shaping():
    """Every offered request ends in good or bad once, so return = ((1+w)·G − w·N)/λ."""
    cfg = RewardConfig(violation_penalty=2.0, pending_miss_penalty=0.0)
    n, lam = 10, 2.0
    for good in range(n + 1):
        ret = step_reward(w(finished=n, within=good), 0, lam, cfg).reward
        assert ret == pytest.approx(((1 + 2.0) * good - 2.0 * n) / lam)
