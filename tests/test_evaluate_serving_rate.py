"""Serving-rate search (Arrow §6.1: highest rate with ≥ 90% attainment) on synthetic curves."""

from __future__ import annotations

import math

import pytest

from arrow_rl.metrics.serving_rate import find_serving_rate


def logistic(threshold: float):
    """Monotone attainment curve crossing 90% exactly at ``threshold``."""
    k = 8.0
    offset = math.log(9.0) / k  # 1/(1+e^{-k x}) = 0.9 at x = ln 9 / k
    return lambda s: 1.0 / (1.0 + math.exp(-k * (threshold - s + offset)))


@pytest.mark.parametrize("threshold", [0.07, 0.3, 1.0, 1.7, 5.3, 40.0])
def test_bisection_finds_the_90pct_crossing_within_tolerance(threshold):
    res = find_serving_rate(logistic(threshold), base_rate=2.0, rel_tol=0.02, max_evals=40)
    assert res.scale <= threshold * (1 + 1e-9)
    assert res.scale >= threshold / 1.02 - 1e-12
    assert res.rate == pytest.approx(2.0 * res.scale)


def test_result_is_a_passing_point_and_bracket_upper_end_fails():
    f = logistic(2.2)
    res = find_serving_rate(f, base_rate=1.0, rel_tol=0.05)
    lo, hi = res.bracket
    assert res.points[lo] >= 0.9 and res.points[hi] < 0.9 and hi / lo <= 1.05


def test_every_evaluation_is_recorded_once():
    calls = []

    def f(s):
        calls.append(s)
        return logistic(3.0)(s)

    res = find_serving_rate(f, base_rate=1.0, rel_tol=0.05)
    assert len(calls) == len(set(calls)) == len(res.points)


def test_max_evals_bounds_the_number_of_simulations():
    calls = []
    find_serving_rate(lambda s: calls.append(s) or logistic(3.0)(s), base_rate=1.0, rel_tol=1e-6, max_evals=7)
    assert len(calls) <= 7


def test_never_passing_gives_zero_rate():
    res = find_serving_rate(lambda s: 0.5, base_rate=3.0)
    assert res.scale == 0.0 and res.rate == 0.0


def test_always_passing_stops_at_max_scale():
    res = find_serving_rate(lambda s: 1.0, base_rate=1.0, max_scale=16.0)
    assert res.scale == 16.0


def test_exactly_90pct_counts_as_attained():
    res = find_serving_rate(lambda s: 0.9 if s <= 2.0 else 0.0, base_rate=1.0, rel_tol=0.01)
    assert res.scale == pytest.approx(2.0, rel=0.011) and res.points[res.scale] >= 0.9


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="target"):
        find_serving_rate(lambda s: 1.0, 1.0, target=1.5)
    with pytest.raises(ValueError, match="rel_tol"):
        find_serving_rate(lambda s: 1.0, 1.0, rel_tol=0)
