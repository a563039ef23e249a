"""What the env-side privileged teachers share: the ``Controller`` form over the moves codec, the
Algorithm 3 profiles that pick instances, and the what-if planner over the recorded future.

The teachers plan on branches of the emulator the env binds (``bind_cluster``): the emulator holds
the future trace, which is privileged (the student sees only its observation).
"""

from __future__ import annotations

import math
from typing import Any

from arrow_rl.arrow.flip_selection import ProfileSource
from arrow_rl.cluster.base import ClusterInfo, Flip
from arrow_rl.control import ControlState
from arrow_rl.controllers.whatif import RECORDED_FUTURE, Candidate, Ranking, WhatIfPlanner

from envs.moves import MoveCodec


class CloneTeacher:
    """Base of the env-side teachers: ``choose`` an action of ``codec`` from a ``ControlState``."""

    name = "clone-teacher"

    def __init__(self, codec: MoveCodec, planner: WhatIfPlanner, profiles: ProfileSource = None) -> None:
        self.codec = codec
        self.planner = planner
        self.profiles = profiles
        self.cluster: Any = None
        self.evaluations = 0
        self._last_decision_s = -math.inf

    def bind_cluster(self, cluster: Any) -> None:
        RECORDED_FUTURE.require(cluster, f"the {self.name} teacher")
        self.cluster = cluster

    def reset(self, info: ClusterInfo) -> None:
        if self.profiles is None:   # the Alg. 3 profiles the env and a deployed checkpoint use
            from arrow_rl.arrow import default_profiles

            self.profiles = default_profiles(info)
        self.evaluations = 0
        self._last_decision_s = -math.inf

    def act(self, state: ControlState) -> list[Flip]:
        """The ``Controller`` form (for running the teacher alone)."""
        a = self.choose(state)
        return [] if a == 0 else list(self.codec.flips(a, state.instances, self.profiles) or [])

    def choose(self, state: ControlState) -> int:
        raise NotImplementedError

    def _decides_now(self, state: ControlState, interval_s: float) -> bool:
        """Whether ``interval_s`` has passed since the last decision (then this is one)."""
        if self.cluster is None:
            raise RuntimeError(f"{type(self).__name__}.choose before bind_cluster(cluster)")
        if state.now - self._last_decision_s < interval_s - 1e-9:
            return False
        self._last_decision_s = state.now
        return True

    def _rank(self, candidates: list[Candidate]) -> Ranking:
        """The planner's ranking of ``candidates`` over the recorded future (counted in ``evaluations``)."""
        ranking = self.planner.rank(self.cluster, candidates, RECORDED_FUTURE)
        self.evaluations += len(ranking.scores)
        return ranking
