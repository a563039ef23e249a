"""A privileged lookahead teacher over the moves codec (``teacher: oracle-moves``): DAgger labels from
the lookahead oracle, planned directly in the env's action space.

The project's ``OracleController`` (``arrow_rl/controllers/baselines.py``) plans whole splits; this
teacher plans in the env's action space, so its labels need no mapping. Both weigh candidates on
the what-if planner (``arrow_rl.controllers.whatif``): every ``decision_interval_s`` it branches the
emulator (which holds the future trace: privileged, the student sees only the observation),
applies each candidate action's flips, runs ``lookahead_s`` open loop and keeps the action with the
best score: within-SLO finishes − ``violation_weight`` × (late or rejected finishes + queued
requests already predicted to miss TTFT). Ties keep the no-op, then the smaller move. Between
decisions it answers the no-op, as the oracle controller does. Greedy over a finite horizon, so a
strong reference, not an upper bound.

Each decision also leaves the score of every candidate it tried in :meth:`candidate_scores`
(NaN for an action it did not try), so imitation can learn from soft labels: the student cannot
see the future that separates two near-equal candidates, and a hard argmax turns those near-ties
into label noise (``pretrain.soft_label_weight``, docs/agents.md).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from arrow_rl.arrow.flip_selection import ProfileSource
from arrow_rl.cluster.base import ClusterInfo, InstanceView
from arrow_rl.control import ControlState
from arrow_rl.controllers.whatif import Candidate, WhatIfPlanner

from envs.clone_teacher import CloneTeacher
from envs.moves import MoveCodec, role_counts
from envs.teacher_config import MoveOracleConfig


class MoveOracleTeacher(CloneTeacher):
    """Lookahead teacher choosing an action of ``codec`` (module docstring)."""

    name = "oracle-moves"

    def __init__(self, codec: MoveCodec, config: MoveOracleConfig | None = None, profiles: ProfileSource = None) -> None:
        self.config = config or MoveOracleConfig()
        super().__init__(codec, WhatIfPlanner(self.config.lookahead_s, self.config.violation_weight), profiles)
        self._scores: dict[int, float] = {}
        self._candidates = [0, *self._tried_actions(codec, self.config.candidate_fractions)]

    @staticmethod
    def _tried_actions(codec: MoveCodec, fractions: list[float] | None) -> list[int]:
        """The moves it weighs besides the no-op: those of ``fractions`` (None: every fraction), each
        under its ``canonical`` action, so a move two fractions share on this cluster is tried once
        and labelled by the one action the mask leaves."""
        if fractions is not None and not set(fractions) <= set(codec.fractions):
            raise ValueError(f"env config: field 'teacher_config.candidate_fractions'={fractions} must be a subset "
                             f"of action.move_fractions={codec.fractions}")
        keep = set(range(len(codec.fractions))) if fractions is None else {codec.fractions.index(f) for f in fractions}
        tried = [codec.canonical(a) for a in range(1, int(codec.space.n)) if (a - 1) % len(codec.fractions) in keep]
        return sorted(set(tried))

    def reset(self, info: ClusterInfo) -> None:
        super().reset(info)
        self._scores = {}

    def candidate_scores(self) -> np.ndarray:
        """Score of each action at this step's decision (length ``codec.space.n``; NaN: not tried,
        all NaN on a step between decisions)."""
        out = np.full(int(self.codec.space.n), np.nan, np.float32)
        for a, v in self._scores.items():
            out[a] = v
        return out

    def candidates(self, views: Sequence[InstanceView]) -> list[Candidate[int]]:
        """The tried actions that are possible now, each with its flips and the instances it moves
        (L1 over the P, D, M counts)."""
        counts = role_counts(views)
        out = []
        for a in self._candidates:
            flips = [] if a == 0 else self.codec.flips(a, views, self.profiles)
            if flips is None:
                continue
            target = self.codec.result(a, counts)
            moved = 0 if target is None else sum(abs(x - y) for x, y in zip(target, counts))
            out.append(Candidate(a, flips, moved))
        return out

    def choose(self, state: ControlState) -> int:
        """The action to take now (0 between decisions)."""
        if not self._decides_now(state, self.config.decision_interval_s):
            self._scores = {}   # no decision now: nothing was scored
            return 0
        ranking = self._rank(self.candidates(list(state.instances)))
        self._scores = ranking.scores
        return ranking.best.key
