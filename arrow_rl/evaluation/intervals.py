"""Seed statistics: mean and 95% confidence interval of a serving rate, and who wins a scenario.

Why a t-interval: three to five seeds are too few for a normal approximation; Student's t with
n−1 degrees of freedom is the textbook interval for a mean of a few independent runs.
Why overlap, not a test: the question a reader asks of a table is "could these two be the same?";
overlapping 95% intervals is a conservative answer (it calls more ties than a paired test), which
is the safe side for a leaderboard. A rate found at the search ceiling is only a lower bound, so
its interval reaches to infinity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """Mean serving rate over seeds with its 95% t-interval."""

    mean: float
    lo: float
    hi: float
    n: int
    at_ceiling: bool = False

    def overlaps(self, other: "Interval") -> bool:
        return self.lo <= other.hi and other.lo <= self.hi


def mean_ci95(values: list[float], at_ceiling: bool = False) -> Interval:
    """Mean and 95% Student-t interval of ``values`` (one serving rate per seed). One value gives
    a zero-width interval (no spread is known); ``at_ceiling`` opens the upper end."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        raise ValueError("no values")
    mean = float(a.mean())
    if a.size == 1:
        half = 0.0
    else:
        half = float(stats.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size))
    return Interval(mean, max(0.0, mean - half), math.inf if at_ceiling else mean + half, int(a.size), at_ceiling)


def winners(intervals: dict[str, Interval]) -> list[str]:
    """The controllers that cannot be told apart from the best mean: the best one and every one
    whose interval overlaps it. One name is a win; several are a tie."""
    if not intervals:
        return []
    best = max(intervals, key=lambda k: (intervals[k].at_ceiling, intervals[k].mean))
    return [k for k, v in intervals.items() if k == best or v.overlaps(intervals[best])]


def geomean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if not vals:
        return None
    return float(math.exp(sum(math.log(v) for v in vals) / len(vals)))
