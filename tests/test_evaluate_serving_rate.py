"""Serving-rate search (Arrow §6.1: highest rate with ≥ 90% attainment) on synthetic curves."""

from __future__ import annotations

import math

import pytest

from arrow_rl.evaluation.crossing import TARGET_ATTAINMENT, search_crossing
from arrow_rl.evaluation.protocol import Protocol


def logistic(threshold: float):
    """Monotone attainment curve crossing 90% exactly at ``threshold``."""
    k = 8.0
    offset = math.log(9.0) / k  # 1/(1+e^{-k x}) = 0.9 at x = ln 9 / k
    return lambda s: 1.0 / (1.0 + math.exp(-k * (threshold - s + offset)))


def search(f, rel_tol: float = 0.05, max_evals: int = 16, ceiling: float = 64.0):
    return search_crossing(f, rel_tol=rel_tol, ceiling=ceiling, max_evals=max_evals)


@pytest.mark.parametrize("threshold", [0.07, 0.3, 1.0, 1.7, 5.3, 40.0])
def test_the_search_brackets_the_90pct_crossing_within_tolerance(threshold):
    c = search(logistic(threshold), rel_tol=0.02, max_evals=40)
    lo, hi = c.bracket
    assert lo <= threshold * (1 + 1e-9) and hi >= threshold * (1 - 1e-9) and hi <= lo * 1.02
    assert lo <= c.factor <= hi


def test_the_bracket_low_end_passes_and_its_high_end_fails():
    c = search(logistic(2.2))
    lo, hi = c.bracket
    assert c.points[lo] >= TARGET_ATTAINMENT > c.points[hi] and hi / lo <= 1.05


def test_every_evaluation_is_recorded_once():
    calls = []

    def f(s):
        calls.append(s)
        return logistic(3.0)(s)

    c = search(f)
    assert len(calls) == len(set(calls)) == len(c.points)


def test_max_evals_bounds_the_number_of_simulations():
    calls = []
    search(lambda s: calls.append(s) or logistic(3.0)(s), rel_tol=1e-6, max_evals=7)
    assert len(calls) <= 7


def test_never_passing_gives_zero_rate():
    c = search(lambda s: 0.5)
    assert c.factor == 0.0 and c.bracket[0] == 0.0 and not c.at_ceiling


def test_always_passing_stops_at_the_ceiling():
    c = search(lambda s: 1.0, ceiling=16.0)
    assert c.bracket[0] == pytest.approx(16.0) and c.bracket[1] == math.inf and c.factor == c.bracket[0]
    assert c.at_ceiling


def test_a_tolerance_below_float_resolution_still_ends():
    c = search(lambda s: 1.0 if s < 1.7 else 0.0, rel_tol=1e-300, max_evals=10_000)
    lo, hi = c.bracket
    assert lo < 1.7 <= hi and hi == math.nextafter(lo, math.inf) and len(c.points) < 200


def test_exactly_90pct_counts_as_attained():
    c = search(lambda s: 0.9 if s <= 2.0 else 0.0, rel_tol=0.01)
    assert c.bracket[0] == pytest.approx(2.0) and c.points[c.bracket[0]] >= 0.9


def test_invalid_search_settings_are_rejected():
    with pytest.raises(ValueError, match="rel_tol"):
        Protocol(rel_tol=0)
    with pytest.raises(ValueError, match="ceiling_factor"):
        Protocol(ceiling_factor=1.0)
