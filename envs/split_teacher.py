"""A privileged teacher that picks a whole P:D:M split and holds it (issue 12, ``teacher: oracle-split``).

Why a second teacher: what the suite rewards is reaching the right split for the traffic and
holding it (the static-best split ties or wins every scenario of the standard suite), while the
move-by-move lookahead teacher (``oracle-moves``, ``envs.move_teacher``) re-plans one move every
5 s over a 15-30 s horizon, so its labels are many small corrections whose argmax flips between
near-equal candidates. This teacher separates *where to go* from *how to get there*:

- every ``replan_s`` it clones the emulator (which holds the future trace: privileged; the student
  sees only its observation), jumps each clone to one candidate split of a grid (``grid`` units of
  the pool, plus the current split), runs ``horizon_s`` open loop and keeps the best-scoring split
  as its **target**. The score is ``oracle-moves``' (within-SLO finishes − ``violation_weight`` ×
  misses), so the jump's own drain cost is in it: a re-split must pay for itself within the horizon.
  A candidate must beat holding the current split by ``min_gain`` (relative) to become the target;
  ties go to the split that moves the fewest instances;
- on every decision step in between it answers the action of the moves codec that brings the split
  closest to the target (L1 over P, D, M counts; ties: the no-op, then the smaller move), and the
  no-op once there.

So one label sequence is "go to X and stay", the shape the student has to learn. Greedy over a
finite horizon: a reference, not an upper bound. Cost per replan: one emulator clone and
``horizon_s`` of simulation per candidate (29 candidates on the default 8-unit grid).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from arrow_rl.arrow.flip_selection import ProfileSource
from arrow_rl.cluster.base import ClusterInfo
from arrow_rl.control import ControlState

from envs.move_teacher import CloneTeacher, TeacherConfig, lookahead_score
from envs.moves import Counts, MoveCodec, role_counts


class SplitOracleConfig(TeacherConfig):
    """``EnvConfig.teacher_config`` for ``teacher: oracle-split``."""

    decision_interval_s: float = Field(5.0, gt=0, description="how often it answers a move (the policy's cadence)")
    replan_s: float = Field(30.0, gt=0, description="how often it re-chooses the target split")
    horizon_s: float = Field(45.0, gt=0, description="simulated future per candidate split, held fixed")
    grid: int = Field(8, ge=2, le=64, description="candidate splits: P, D, M in units of N / grid")
    violation_weight: float = Field(1.0, ge=0, description="score = good − weight × (misses + doomed queued)")
    min_gain: float = Field(0.02, ge=0, description="a new target must beat holding the current split by "
                            "this fraction of |its score| (hysteresis against near-ties)")


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
        super().__init__(codec, profiles)
        self.config = config or SplitOracleConfig()
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

    def plan(self, state: ControlState) -> Counts:
        """Re-choose the target split from the current state (module docstring)."""
        views = list(state.instances)
        counts = role_counts(views)
        scored: list[tuple[float, int, Counts]] = []
        hold = None
        for split in dict.fromkeys([counts, *self.splits]):   # the current split first, once
            flips = [] if split == counts else self.codec.flips_to_counts(views, split, self.profiles)
            if flips is None:   # unhealthy instances make it unreachable now
                continue
            value = lookahead_score(self.cluster, flips, self.config.horizon_s, self.config.violation_weight)
            self.evaluations += 1
            moved = sum(abs(x - y) for x, y in zip(split, counts))
            scored.append((value, moved, split))
            if split == counts:
                hold = value
        best_value, _moved, best = max(scored, key=lambda t: (t[0], -t[1]))
        if hold is not None and best != counts and best_value - hold <= self.config.min_gain * max(abs(hold), 1.0):
            best = counts   # not worth a re-split: hold
        return best

    def toward(self, counts: Counts, target: Counts) -> int:
        """The valid action whose result is closest to ``target`` (ties: no-op, then fewer moved)."""
        return self.codec.nearest_action(counts, target)

    def choose(self, state: ControlState) -> int:
        """The action to take now (0 between decisions)."""
        if self.cluster is None:
            raise RuntimeError("SplitOracleTeacher.choose before bind_cluster(cluster)")
        if state.now - self._last_decision_s < self.config.decision_interval_s - 1e-9:
            return 0
        self._last_decision_s = state.now
        if self.target is None or state.now - self._last_plan_s >= self.config.replan_s - 1e-9:
            self._last_plan_s = state.now
            self.target = self.plan(state)
        return self.toward(role_counts(state.instances), self.target)
