"""The serving rate: where SLO attainment crosses 90%, searched on a common factor grid, then
interpolated on a monotone fit.

The request serving rate is the highest request rate whose SLO attainment (both SLOs, unfinished
requests counted as misses) is at least ``TARGET_ATTAINMENT`` = 90% (Arrow §6.1).

Every controller's search on a (scenario, seed) probes the same log-spaced grid of rate factors,
``GRID_RATIO ** i`` (factor 1 and the ceiling are grid points), so two controllers are run on the
same loads wherever they are compared coarsely. The search brackets the crossing by doubling or
halving along the grid from factor 1, bisects on grid points until two neighbours bracket it, then
bisects in log space off the grid until the bracket is at most ``1 + rel_tol`` wide.

The reported serving factor is not the bracket's low end: a non-increasing (isotonic) fit of
attainment over every probed factor (``scipy.optimize.isotonic_regression``), linearly interpolated
in log factor between the last fitted point at or above the target and the next one below it.
Loads are nested across factors (``arrow_rl.evaluation.protocol``), so attainment is close to
monotone within a seed; the isotonic fit absorbs what noise remains instead of letting the search
land on a random crossing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.optimize import isotonic_regression

TARGET_ATTAINMENT = 0.90    # Arrow §6.1
GRID_RATIO = 2.0 ** 0.25     # four grid points per doubling: bisection of a x2 bracket stays on the grid
MIN_FACTOR = 1.0 / 64


@dataclass
class Crossing:
    """One seed's search: the interpolated crossing, its bracket and every probed point."""

    factor: float                   # interpolated serving factor (0: nothing passed down to MIN_FACTOR)
    bracket: tuple[float, float]    # (highest passing factor, lowest failing factor above it; inf: none)
    points: dict[float, float] = field(default_factory=dict)   # factor -> attainment, every probe
    at_ceiling: bool = False


def grid_factor(i: int) -> float:
    """Grid point ``i`` (0 is factor 1)."""
    return GRID_RATIO ** i


def _grid_index(factor: float) -> int:
    return int(round(math.log(factor) / math.log(GRID_RATIO)))


def search_crossing(attainment_at: Callable[[float], float], *, rel_tol: float, ceiling: float,
                    max_evals: int, target: float = TARGET_ATTAINMENT, min_factor: float = MIN_FACTOR) -> Crossing:
    """Bracket on the grid, bisect on the grid, refine off it; then interpolate (module docstring).

    ``attainment_at(k)`` is called at most once per factor and at most ``max_evals`` times."""
    points: dict[float, float] = {}

    def f(k: float) -> float:
        if k not in points:
            points[k] = float(attainment_at(k))
        return points[k]

    top, bottom = _grid_index(ceiling), _grid_index(min_factor)
    lo_i: int | None = None      # highest grid index known to pass
    hi_i: int | None = None      # lowest grid index known to fail
    i = 0
    if f(grid_factor(i)) >= target:
        lo_i = i
        while len(points) < max_evals and i < top:
            i = min(i + 4, top)
            if f(grid_factor(i)) >= target:
                lo_i = i
            else:
                hi_i = i
                break
    else:
        hi_i = i
        while len(points) < max_evals and i > bottom:
            i = max(i - 4, bottom)
            if f(grid_factor(i)) >= target:
                lo_i = i
                break
            hi_i = i
    if lo_i is not None and hi_i is not None:
        while len(points) < max_evals and hi_i - lo_i > 1:
            mid = (lo_i + hi_i) // 2
            if f(grid_factor(mid)) >= target:
                lo_i = mid
            else:
                hi_i = mid
    lo = grid_factor(lo_i) if lo_i is not None else 0.0
    hi = grid_factor(hi_i) if hi_i is not None else math.inf
    if lo > 0 and math.isfinite(hi):
        while len(points) < max_evals and hi / lo > 1.0 + rel_tol:
            mid = math.sqrt(lo * hi)
            if not lo < mid < hi:   # adjacent floats: a tolerance finer than float resolution ends here
                break
            if f(mid) >= target:
                lo = mid
            else:
                hi = mid
    at_ceiling = lo_i is not None and lo_i >= top and not math.isfinite(hi)
    return Crossing(interpolated_crossing(points, target), (lo, hi), dict(sorted(points.items())), at_ceiling)


def interpolated_crossing(points: dict[float, float], target: float = TARGET_ATTAINMENT) -> float:
    """The factor where a non-increasing fit of ``points`` (factor -> attainment) crosses ``target``,
    linear in log factor between the bracketing fitted points; 0 when no point passes, the highest
    factor when every point passes."""
    if not points:
        return 0.0
    ks = np.array(sorted(points))
    att = np.array([points[k] for k in ks])
    fit = isotonic_regression(att, increasing=False).x
    passing = np.flatnonzero(fit >= target)
    if passing.size == 0:
        return 0.0
    j = int(passing[-1])
    if j == ks.size - 1:
        return float(ks[-1])
    a_lo, a_hi = float(fit[j]), float(fit[j + 1])
    w = (a_lo - target) / (a_lo - a_hi) if a_lo > a_hi else 0.0
    return float(math.exp(math.log(ks[j]) + w * (math.log(ks[j + 1]) - math.log(ks[j]))))
