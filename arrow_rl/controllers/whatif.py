"""What-if planning: how would the cluster fare over the next horizon if these flips happened now?

One planner serves every lookahead controller: the clairvoyant ``oracle`` controller
(``arrow_rl.controllers.baselines``), the deployable ``mpc`` (``arrow_rl.controllers.mpc``) and the
env's privileged teachers (``envs.move_teacher``, ``envs.split_teacher``). Each of them only proposes candidates (a split, an action) with the flips
that reach them; the planner branches the cluster's present state once per candidate, applies the
flips, runs the branch open loop for ``horizon_s`` and scores what it served (``score_window``).

The requests a branch sees arrive are a parameter (``ArrivalStream``), not something the planner
reads from the cluster. ``RECORDED_FUTURE`` is the emulator's own trace: clairvoyant, what the
oracle and the teachers plan on. The ``mpc`` controller (``arrow_rl.controllers.mpc``) plans on a
forecast built from the recent past instead (``arrow_rl.controllers.forecast.ForecastArrivals``): its
branches keep the present state and replace the requests not yet arrived by the forecast
(``EmulatedCluster.clone_with_future``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Hashable, Iterable, Protocol, Sequence, TypeVar

from arrow_rl.cluster.base import Flip, MetricsWindow

K = TypeVar("K", bound=Hashable)


class ArrivalStream(Protocol):
    """The requests a what-if branch sees arrive after now."""

    def branch(self, cluster: Any) -> Any:
        """An independent copy of ``cluster``'s present state (instances, queues, work in flight)
        whose ``advance`` replays this stream's arrivals; ``cluster`` itself is left untouched."""
        ...


class RecordedFuture:
    """The cluster's own future: an emulator clone keeps the trace, so a branch sees exactly the
    requests the real run will (privileged: only a planner that may see the future uses it)."""

    name = "recorded"

    def branch(self, cluster: Any) -> Any:
        return cluster.clone()

    @staticmethod
    def require(cluster: Any, who: str) -> None:
        """Fail when binding, not at the first decision: ``who`` needs the emulator's ``clone()``."""
        if not hasattr(cluster, "clone"):
            raise TypeError(f"{who} needs a cluster with clone() (the emulator)")


RECORDED_FUTURE = RecordedFuture()


def score_window(window: MetricsWindow, violation_weight: float) -> float:
    """What a branch served: requests finished within SLO minus ``violation_weight`` × misses, a miss
    being a late or rejected finish or a queued request already predicted to miss its TTFT SLO (so
    a candidate cannot win by leaving doomed work queued past the horizon)."""
    misses = (window.finished - window.finished_within_slo) + window.rejected + window.pending_predicted_ttft_misses
    return window.finished_within_slo - violation_weight * misses


@dataclass(frozen=True)
class Candidate(Generic[K]):
    """One option a planner weighs: ``key`` names it to the caller (a split, an action), ``flips``
    reach it from now, ``moved`` measures the move (ties go to the smaller one)."""

    key: K
    flips: Sequence[Flip]
    moved: int


@dataclass(frozen=True)
class Ranking(Generic[K]):
    """The best candidate and every candidate's score by key, in the order they were given."""

    best: Candidate[K]
    scores: dict[K, float]


@dataclass(frozen=True)
class WhatIfPlanner:
    """Scores flips by simulating ``horizon_s`` ahead on a branch of the cluster (module docstring).

    Greedy over a finite horizon with the split held fixed (open loop), so a strong reference for
    what the next move should be, not an upper bound on what a controller can reach."""

    horizon_s: float
    violation_weight: float = 1.0

    def score(self, cluster: Any, flips: Sequence[Flip], arrivals: ArrivalStream) -> float:
        """``score_window`` of ``horizon_s`` on a branch of ``cluster`` with ``flips`` applied now."""
        branch = arrivals.branch(cluster)
        for f in flips:
            branch.flip(f.instance_id, f.role)
        return score_window(branch.advance(self.horizon_s), self.violation_weight)

    def rank(self, cluster: Any, candidates: Iterable[Candidate[K]], arrivals: ArrivalStream) -> Ranking[K]:
        """Score every candidate; the best has the highest score, ties going to the smaller move and
        then to the earlier candidate (callers list the hold-still candidate first)."""
        scores: dict[K, float] = {}
        best: Candidate[K] | None = None
        best_key: tuple[float, int, int] | None = None
        for order, cand in enumerate(candidates):
            value = scores[cand.key] = self.score(cluster, cand.flips, arrivals)
            key = (value, -cand.moved, -order)
            if best_key is None or key > best_key:
                best, best_key = cand, key
        if best is None:
            raise ValueError("WhatIfPlanner.rank needs at least one candidate")
        return Ranking(best, scores)
