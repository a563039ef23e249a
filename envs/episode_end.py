"""How an episode's counted requests stand as it goes, and whether (and how) it has ended.

The evaluation scores a run by its *counted* requests (those arriving after the warm-up,
``count_from_s``) and stops a run whose result is already decided (``CertainMisses``). The env
follows the same books, so its reward and its attainment are the suite's:

- per step, the counted requests that ended in it, within both SLOs (``good``) or not (``bad``);
  warm-up requests are served but never rewarded;
- at the horizon with ``episode.end: truncate``, the counted requests still in flight whose miss
  is already certain (no first token by arrival + TTFT SLO, or past their deadline) are charged as
  misses, and the others stay *undecided*: the episode is cut short, not over, so they are neither
  rewarded nor counted against the attainment (``slo_attainment`` = within SLO / decided);
- ``terminated`` once every counted request is decided (served, rejected or a certain miss):
  nothing the agent does afterwards can change the episode's objective.

With ``episode.end: terminate`` the horizon is terminal and every unfinished counted request is a
miss (the offered-request denominator of Arrow §6.1, as ``run_policy`` scores a run it played to
its horizon).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arrow_rl.cluster.base import SLO, Cluster
from arrow_rl.evaluation.runner import CertainMisses
from arrow_rl.workload.workload import Workload


@dataclass(frozen=True)
class EndJudgement:
    """The episode's state after a step: whether it ended, how, and the misses charged at its end."""

    terminated: bool
    truncated: bool
    charged_at_end: int    # counted requests unended at the end and charged as misses
    undecided: int         # counted requests unended and not certainly missed (not charged, not counted)


class EpisodeOutcomes:
    """Books of one episode's counted requests (module docstring)."""

    def __init__(self, workload: Workload, slo: SLO, count_from_s: float, end_rule: str) -> None:
        self.slo = slo
        self.end_rule = end_rule
        self.first = int(np.searchsorted(workload.arrival_s, count_from_s, side="left"))
        self.counted = len(workload) - self.first
        self._misses = CertainMisses(workload, slo, count_from_s, target=1.0)
        self._seen = 0
        self.good = 0
        self.ended = 0

    def step_counts(self, cluster: Cluster) -> tuple[int, int]:
        """(good, bad) among the counted requests that ended since the last call."""
        good = bad = 0
        for r in cluster.ended_since(self._seen):
            self._seen += 1
            if r.request_id < self.first:
                continue
            self.ended += 1
            if r.meets(self.slo):
                good += 1
            else:
                bad += 1
        self.good += good
        return good, bad

    def judge(self, cluster: Cluster, at_horizon: bool) -> EndJudgement:
        """Whether the episode ends after this step (module docstring), and the misses charged then."""
        if self.end_rule == "terminate":
            if not (cluster.done or at_horizon):
                return EndJudgement(False, False, 0, 0)
            return EndJudgement(True, False, self.counted - self.ended, 0)
        self._misses.update(cluster)
        undecided = self._misses.undecided()
        terminated = bool(cluster.done) or undecided == 0
        if not (terminated or at_horizon):
            return EndJudgement(False, False, 0, undecided)
        return EndJudgement(terminated, not terminated, self._misses.unended_misses(), 0 if terminated else undecided)

    def attainment(self, judgement: EndJudgement) -> float:
        """Counted requests within both SLOs over the decided ones (all of them under ``terminate``)."""
        decided = self.counted - judgement.undecided
        return self.good / decided if decided > 0 else 1.0
