"""A privileged lookahead teacher over the moves codec (issue 12: "DAgger labels from the lookahead oracle").

Seam: the project's ``OracleController`` (``arrow_rl/controllers/baselines.py``) plans P↔D only
until its three-role moves land; this teacher lives on the env's side and plans directly in the
env's action space, so its labels need no mapping: every ``decision_interval_s`` it clones the
emulator (which holds the future trace: privileged, the student sees only the observation),
applies each candidate action's flips, runs ``lookahead_s`` open loop and keeps the action with the
best score, the oracle's: within-SLO finishes − ``violation_weight`` × (late or rejected finishes +
queued requests already predicted to miss TTFT). Ties keep the no-op, then the smaller move.
Between decisions it answers the no-op, as the oracle controller does. Greedy over a finite
horizon, so a strong reference, not an upper bound.

Each decision also leaves the score of every candidate it tried in :meth:`candidate_scores`
(NaN for an action it did not try), so imitation can learn from soft labels: the student cannot
see the future that separates two near-equal candidates, and a hard argmax turns those near-ties
into label noise (``pretrain.soft_label_weight``, docs/agents.md).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from arrow_rl.arrow.flip_selection import ProfileSource
from arrow_rl.cluster.base import ClusterInfo, Flip
from arrow_rl.control import ControlState

from envs.moves import MoveCodec, role_counts


class TeacherConfig(BaseModel):
    """Base of an env-side teacher's ``EnvConfig.teacher_config``: strict, and errors name the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Any:
        try:
            return cls(**data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"env config: field 'teacher_config': {problems}") from None


class CloneTeacher:
    """What the env-side privileged teachers share: they plan on clones of the emulator the env
    binds (``bind_cluster``), and pick instances with Algorithm 3's profiles (``reset``)."""

    name = "clone-teacher"

    def __init__(self, codec: MoveCodec, profiles: ProfileSource = None) -> None:
        self.codec = codec
        self.profiles = profiles
        self.cluster: Any = None
        self.evaluations = 0
        self._last_decision_s = -math.inf

    def bind_cluster(self, cluster: Any) -> None:
        if not hasattr(cluster, "clone"):
            raise TypeError(f"the {self.name} teacher needs a cluster with clone() (the emulator)")
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


class MoveOracleConfig(TeacherConfig):
    """``EnvConfig.teacher_config`` for ``teacher: oracle-moves`` (cost: candidates × lookahead per decision)."""

    decision_interval_s: float = Field(5.0, gt=0, description="how often it re-plans (the oracle's default)")
    lookahead_s: float = Field(20.0, gt=0, description="simulated future per candidate, split held fixed")
    violation_weight: float = Field(1.0, ge=0, description="score = good − weight × (misses + doomed queued)")
    candidate_fractions: list[float] | None = Field(
        None, description="move fractions it tries (a subset of action.move_fractions); None: all. "
        "Fewer candidates make labelling cheaper: each costs one emulator clone + lookahead")


def lookahead_score(cluster: Any, flips: list[Flip], horizon_s: float, violation_weight: float) -> float:
    """The oracle's score of ``flips`` applied now: on a clone of ``cluster``, run ``horizon_s`` open
    loop; within-SLO finishes − ``violation_weight`` × (late or rejected finishes + queued requests
    already predicted to miss TTFT)."""
    clone = cluster.clone()
    for f in flips:
        clone.flip(f.instance_id, f.role)
    w = clone.advance(horizon_s)
    misses = (w.finished - w.finished_within_slo) + w.rejected + w.pending_predicted_ttft_misses
    return w.finished_within_slo - violation_weight * misses


class MoveOracleTeacher(CloneTeacher):
    """Lookahead teacher choosing an action of ``codec`` (module docstring)."""

    name = "oracle-moves"

    def __init__(self, codec: MoveCodec, config: MoveOracleConfig | None = None, profiles: ProfileSource = None) -> None:
        super().__init__(codec, profiles)
        self.config = config or MoveOracleConfig()
        self._scores: dict[int, float] = {}
        fr = self.config.candidate_fractions
        if fr is not None and not set(fr) <= set(codec.fractions):
            raise ValueError(f"env config: field 'teacher_config.candidate_fractions'={fr} must be a subset of "
                             f"action.move_fractions={codec.fractions}")
        keep = set(range(len(codec.fractions))) if fr is None else {codec.fractions.index(f) for f in fr}
        self._candidates = [0] + [a for a in range(1, int(codec.space.n))
                                  if (a - 1) % len(codec.fractions) in keep]

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

    def score(self, flips: list[Flip]) -> float:
        self.evaluations += 1
        return lookahead_score(self.cluster, flips, self.config.lookahead_s, self.config.violation_weight)

    def choose(self, state: ControlState) -> int:
        """The action to take now (0 between decisions)."""
        if self.cluster is None:
            raise RuntimeError("MoveOracleTeacher.choose before bind_cluster(cluster)")
        if state.now - self._last_decision_s < self.config.decision_interval_s - 1e-9:
            self._scores = {}   # no decision now: nothing was scored
            return 0
        self._last_decision_s = state.now
        views = list(state.instances)
        counts = role_counts(views)
        best, best_key = 0, None
        self._scores = {}
        for a in self._candidates:
            flips = [] if a == 0 else self.codec.flips(a, views, self.profiles)
            if flips is None:
                continue
            target = self.codec.result(a, counts)
            moved = 0 if target is None else sum(abs(x - y) for x, y in zip(target, counts))
            self._scores[a] = value = self.score(flips)
            key = (value, -moved, -a)
            if best_key is None or key > best_key:
                best, best_key = a, key
        return best
