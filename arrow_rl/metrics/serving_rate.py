"""Request serving rate (Arrow §6.1): the highest request rate whose SLO attainment is ≥ 90%.

Rates are produced by scaling the trace's timestamps (Arrow §6.1), so the search runs over the rate
*scale* and reports req/s = scale × the trace's mean rate. Attainment falls (not always strictly)
as the rate grows, so we bracket by doubling/halving from a starting scale and then bisect in log
space until the bracket is within ``rel_tol``. Every evaluated point is returned, so the same runs
also draw the attainment-vs-rate curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

TARGET_ATTAINMENT = 0.90  # Arrow §6.1


@dataclass
class ServingRateResult:
    """Outcome of a serving-rate search."""

    scale: float                       # highest passing rate scale found (0 if none passed)
    rate: float                        # scale × base_rate, req/s
    base_rate: float
    target: float
    points: dict[float, float] = field(default_factory=dict)  # scale -> attainment, every evaluation
    bracket: tuple[float, float] = (0.0, math.inf)            # (highest pass, lowest fail above it)

    def attainment_by_rate(self) -> dict[float, float]:
        return {s * self.base_rate: a for s, a in sorted(self.points.items())}


def find_serving_rate(
    attainment_at: Callable[[float], float],
    base_rate: float,
    *,
    target: float = TARGET_ATTAINMENT,
    initial_scale: float = 1.0,
    rel_tol: float = 0.05,
    min_scale: float = 1.0 / 64,
    max_scale: float = 64.0,
    max_evals: int = 16,
    growth: float = 2.0,
) -> ServingRateResult:
    """Bracket, then bisect, the highest scale ``s`` with ``attainment_at(s) >= target``.

    ``attainment_at`` maps a rate scale to SLO attainment in [0, 1] (both SLOs, unfinished
    requests counted as misses). ``max_evals`` bounds the number of simulations. ``growth`` is the
    bracketing step (×/÷ per evaluation): 2 from a blind start, smaller from a good hint (another
    seed's result), where a tight first bracket saves simulations.
    """
    if not growth > 1:
        raise ValueError(f"growth must be > 1, got {growth}")
    if not 0 < target <= 1:
        raise ValueError(f"target attainment must be in (0, 1], got {target}")
    if not (0 < min_scale <= initial_scale <= max_scale):
        raise ValueError(f"need 0 < min_scale <= initial_scale <= max_scale, got {min_scale}, {initial_scale}, {max_scale}")
    if rel_tol <= 0:
        raise ValueError(f"rel_tol must be > 0, got {rel_tol}")
    points: dict[float, float] = {}

    def f(scale: float) -> float:
        if scale not in points:
            points[scale] = float(attainment_at(scale))
        return points[scale]

    lo, hi = 0.0, math.inf  # invariant: f(lo) ≥ target (or lo = 0), f(hi) < target (or hi = ∞)
    s = initial_scale
    if f(s) >= target:
        lo = s
        while len(points) < max_evals and s < max_scale:
            s = min(s * growth, max_scale)
            if f(s) >= target:
                lo = s
            else:
                hi = s
                break
    else:
        hi = s
        while len(points) < max_evals and s > min_scale:
            s = max(s / growth, min_scale)
            if f(s) >= target:
                lo = s
                break
            hi = s
    if lo > 0 and math.isfinite(hi):
        while len(points) < max_evals and hi / lo > 1.0 + rel_tol:
            mid = math.sqrt(lo * hi)
            if f(mid) >= target:
                lo = mid
            else:
                hi = mid
    return ServingRateResult(scale=lo, rate=lo * base_rate, base_rate=base_rate, target=target,
                             points=dict(sorted(points.items())), bracket=(lo, hi))
