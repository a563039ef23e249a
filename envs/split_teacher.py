"""A privileged teacher that picks a whole P:D:M split and holds it (``teacher: oracle-split``).

Why a second teacher: what the suite rewards is reaching the right split for the traffic and
holding it (the static-best split ties or wins every scenario of the standard suite), while the
move-by-move lookahead teacher (``oracle-moves``, ``envs.move_teacher``) re-plans one move every
5 s over a 15-30 s horizon, so its labels are many small corrections whose argmax flips between
near-equal candidates. This teacher separates *where to go* from *how to get there*:

- every ``replan_s`` it asks the what-if planner (``arrow_rl.controllers.whatif``) to branch the
  emulator (which holds the future trace: privileged; the student sees only its observation),
  jump each branch to one candidate split of a grid (``grid`` units of the pool, plus the current
  split), run ``horizon_s`` open loop, and keeps the best-scoring split as its **target**. The
  score is ``oracle-moves``' (within-SLO finishes − ``violation_weight`` × misses), so the jump's
  own drain cost is in it: a re-split must pay for itself within the horizon. A candidate must
  beat holding the current split by ``min_gain`` (relative) to become the target; ties go to the
  split that moves the fewest instances;
- on every decision step in between it answers the action of the moves codec that brings the split
  closest to the target (L1 over P, D, M counts; ties: the no-op, then the smaller move), and the
  no-op once there.

So one label sequence is "go to X and stay", the shape the student has to learn. Greedy over a
finite horizon: a reference, not an upper bound. Cost per replan: one emulator clone and
``horizon_s`` of simulation per candidate (29 candidates on the default 8-unit grid).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from arrow_rl.arrow.flip_selection import ProfileSource
from arrow_rl.cluster.base import ClusterInfo, InstanceView
from arrow_rl.control import ControlState
from arrow_rl.controllers.whatif import Candidate, WhatIfPlanner

from envs.clone_teacher import CloneTeacher
from envs.moves import Counts, MoveCodec, role_counts
from envs.teacher_config import SplitOracleConfig


def candidate_splits(codec: MoveCodec, grid: int) -> list[Counts]:
    """The valid (P, D, M) splits on a ``grid``-unit lattice of the cluster, rounded to instances and
    deduplicated (a small cluster has fewer distinct splits than the lattice)."""
    n = codec.num_instances
    out: list[Counts] = []
    for pu in range(grid + 1):
        for du in range(grid + 1 - pu):
            p, d = round(pu * n / grid), round(du * n / grid)
            c = (p, d, n - p - d)
            if c not in out and codec.valid_split(c):
                out.append(c)
    return out


class SplitOracleTeacher(CloneTeacher):
    """Target-split teacher over the moves codec (module docstring)."""

    name = "oracle-split"

    def __init__(self, codec: MoveCodec, config: SplitOracleConfig | None = None, profiles: ProfileSource = None) -> None:
        self.config = config or SplitOracleConfig()
        super().__init__(codec, WhatIfPlanner(self.config.horizon_s, self.config.violation_weight), profiles)
        self.splits = candidate_splits(codec, self.config.grid)
        self.target: Counts | None = None
        self._last_plan_s = -math.inf

    def reset(self, info: ClusterInfo) -> None:
        super().reset(info)
        self.target = None
        self._last_plan_s = -math.inf

    def candidate_scores(self) -> np.ndarray:
        """No per-action scores: its labels are moves toward a target, not scored actions."""
        return np.full(int(self.codec.space.n), np.nan, np.float32)

    def candidates(self, views: Sequence[InstanceView]) -> list[Candidate[Counts]]:
        """The current split first, then the grid's splits reachable now (unhealthy instances can
        make one unreachable), each with its flips and the instances it moves (L1 over the counts)."""
        counts = role_counts(views)
        out = []
        for split in dict.fromkeys([counts, *self.splits]):
            flips = [] if split == counts else self.codec.flips_to_counts(views, split, self.profiles)
            if flips is not None:
                out.append(Candidate(split, flips, sum(abs(x - y) for x, y in zip(split, counts))))
        return out

    def plan(self, state: ControlState) -> Counts:
        """Re-choose the target split from the current state (module docstring)."""
        counts = role_counts(state.instances)
        ranking = self._rank(self.candidates(list(state.instances)))
        best, hold = ranking.best.key, ranking.scores.get(counts)
        if hold is not None and best != counts and \
                ranking.scores[best] - hold <= self.config.min_gain * max(abs(hold), 1.0):
            return counts   # not worth a re-split: hold
        return best

    def toward(self, counts: Counts, target: Counts) -> int:
        """The valid action whose result is closest to ``target`` (ties: no-op, then fewer moved)."""
        return self.codec.nearest_action(counts, target)

    def choose(self, state: ControlState) -> int:
        """The action to take now (0 between decisions)."""
        if not self._decides_now(state, self.config.decision_interval_s):
            return 0
        if self.target is None or state.now - self._last_plan_s >= self.config.replan_s - 1e-9:
            self._last_plan_s = state.now
            self.target = self.plan(state)
        return self.toward(role_counts(state.instances), self.target)
