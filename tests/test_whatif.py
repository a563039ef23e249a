"""The what-if planner (``arrow_rl.controllers.whatif``) and the three lookahead planners built on it.

The golden cases (``tests/golden/make_whatif_golden.py``) pin the clairvoyant oracle's decisions and
the env teachers' labels and candidate scores exactly; the rest checks the planner's own contract."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from arrow_rl.cluster.base import Flip, Role
from arrow_rl.controllers.whatif import RECORDED_FUTURE, Candidate, WhatIfPlanner, score_window

_spec = importlib.util.spec_from_file_location(
    "make_whatif_golden", Path(__file__).with_name("golden") / "make_whatif_golden.py")
make_whatif_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_whatif_golden)

WANT = json.loads(make_whatif_golden.GOLDEN.read_text())


def test_the_golden_file_covers_every_case():
    assert sorted(WANT) == sorted(make_whatif_golden.CASES)


@pytest.mark.parametrize("name", sorted(make_whatif_golden.CASES))
def test_planner_decisions_match_the_golden_set(name):
    assert make_whatif_golden.CASES[name]() == WANT[name]


# ------------------------------------------------------------------------------- the planner ----
class _Branch:
    """A stand-in branch: its window serves ``good[flips]`` requests within SLO."""

    def __init__(self, good: dict) -> None:
        self.good, self.flips = good, []

    def flip(self, instance_id, role) -> None:
        self.flips.append((instance_id, role))

    def advance(self, dt: float) -> SimpleNamespace:
        good = self.good[tuple(self.flips)]
        return _window(finished=good, finished_within_slo=good)


class _Stream:
    """An arrival stream that records which cluster it branched (what a forecast would supply)."""

    def __init__(self, good: dict) -> None:
        self.good, self.branched = good, []

    def branch(self, cluster):
        self.branched.append(cluster)
        return _Branch(self.good)


A, B = Flip(0, Role.DECODE), Flip(1, Role.PREFILL)


def _window(finished=0, finished_within_slo=0, rejected=0, pending_predicted_ttft_misses=0) -> SimpleNamespace:
    """The four ``MetricsWindow`` fields the score reads."""
    return SimpleNamespace(finished=finished, finished_within_slo=finished_within_slo, rejected=rejected,
                           pending_predicted_ttft_misses=pending_predicted_ttft_misses)


def test_the_arrival_stream_is_a_parameter_not_the_clusters_future():
    stream = _Stream({(): 3, ((0, Role.DECODE),): 5})
    planner = WhatIfPlanner(horizon_s=10.0)
    assert planner.score("the cluster", [A], stream) == 5
    assert stream.branched == ["the cluster"]   # branched from the present state, run on the stream


def test_ties_go_to_the_smaller_move_then_the_earlier_candidate():
    good = {(): 4, ((0, Role.DECODE),): 6, ((1, Role.PREFILL),): 6,
            ((0, Role.DECODE), (1, Role.PREFILL)): 6}
    planner = WhatIfPlanner(horizon_s=1.0)
    ranking = planner.rank(None, [Candidate("hold", [], 0), Candidate("both", [A, B], 2),
                                  Candidate("a", [A], 1), Candidate("b", [B], 1)], _Stream(good))
    assert ranking.best.key == "a"
    assert list(ranking.scores) == ["hold", "both", "a", "b"] and ranking.scores["hold"] == 4
    tied = planner.rank(None, [Candidate("hold", [], 0), Candidate("x", [], 0)], _Stream(good))
    assert tied.best.key == "hold"
    with pytest.raises(ValueError, match="at least one"):
        planner.rank(None, [], _Stream(good))


def test_the_score_charges_late_rejected_and_doomed_requests():
    w = _window(finished=10, finished_within_slo=7, rejected=1, pending_predicted_ttft_misses=2)
    assert score_window(w, 1.0) == 7 - 6
    assert score_window(w, 0.5) == 7 - 3


def test_the_recorded_future_needs_the_emulators_clone():
    with pytest.raises(TypeError, match="the oracle needs a cluster with clone"):
        RECORDED_FUTURE.require(object(), "the oracle")
