"""Reward terms (no cluster needed); the end-to-end sign sanity test lives in test_env_episodes.py."""

from __future__ import annotations

import pytest

from arrow_rl.cluster.base import MetricsWindow, PoolStats
from envs.config import RewardConfig
from envs.reward import reward_from_counts, step_reward, terminal_reward


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


def test_the_pending_cap_bounds_the_pending_term_per_step():
    cfg = RewardConfig(pending_miss_penalty=0.5, pending_cap=1.0)
    # 4 pending at λ = 2: only c·λ = 2 are charged
    assert step_reward(w(pending=4), 0, 2.0, cfg).reward == pytest.approx(-0.5)
    # below the cap the term is the unbounded one
    assert step_reward(w(pending=1), 0, 2.0, cfg).reward == pytest.approx(-0.25)


def test_the_reward_options_are_off_by_default():
    cfg = RewardConfig()
    assert cfg.pending_cap is None and cfg.target_weight == 0.0
    assert terminal_reward(0.95, 100.0, cfg) == 0.0
    assert reward_from_counts(1, 0, 1000, 0, 1.0, cfg) == pytest.approx(1 - 0.05 * 1000)


def test_the_target_term_is_a_smooth_step_at_the_target():
    cfg = RewardConfig(target_weight=1.0, target_attainment=0.9, target_width=0.02)
    n = 120.0
    assert terminal_reward(0.9, n, cfg) == pytest.approx(n / 2)
    assert terminal_reward(1.0, n, cfg) == pytest.approx(n, rel=1e-2)
    assert terminal_reward(0.5, n, cfg) == pytest.approx(0.0, abs=1e-6)
    values = [terminal_reward(a, n, cfg) for a in (0.8, 0.88, 0.9, 0.92, 1.0)]
    assert values == sorted(values)
    # scaled by the arrival-window steps, like the good-request sum of a fully served episode
    assert terminal_reward(0.95, 2 * n, cfg) == pytest.approx(2 * terminal_reward(0.95, n, cfg))


def test_deep_overload_cannot_outweigh_the_target_term_with_a_cap():
    """Two episodes of 100 steps at λ = 1: one just above the target, one far below with a
    backlog of 50 pending every step. Bounded, the pending charge is at most w_p·c per step."""
    cfg = RewardConfig(pending_cap=1.0, target_weight=1.0)
    deep = 100 * reward_from_counts(0, 1, 50, 0, 1.0, cfg) + terminal_reward(0.0, 100, cfg)
    assert deep >= 100 * (-1 - 0.05 * 1.0) - 1e-9
    unbounded = 100 * reward_from_counts(0, 1, 50, 0, 1.0, RewardConfig())
    assert unbounded == pytest.approx(100 * (-1 - 0.05 * 50))
