"""The env-side privileged teachers' settings (``EnvConfig.teacher_config``), by teacher name.

Plain pydantic, apart from the teachers themselves: the env config validates a teacher's settings
when it is built (not first in a labelling worker after the model is built), and the teachers
import the moves codec, which imports the env config.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


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


class MoveOracleConfig(TeacherConfig):
    """``EnvConfig.teacher_config`` for ``teacher: oracle-moves`` (cost: candidates × lookahead per decision)."""

    decision_interval_s: float = Field(5.0, gt=0, description="how often it re-plans (the oracle's default)")
    lookahead_s: float = Field(20.0, gt=0, description="simulated future per candidate, split held fixed")
    violation_weight: float = Field(1.0, ge=0, description="score = good − weight × (misses + doomed queued)")
    candidate_fractions: list[float] | None = Field(
        None, description="move fractions it tries (a subset of action.move_fractions); None: all. "
        "Fewer candidates make labelling cheaper: each costs one emulator clone + lookahead")


class SplitOracleConfig(TeacherConfig):
    """``EnvConfig.teacher_config`` for ``teacher: oracle-split``."""

    decision_interval_s: float = Field(5.0, gt=0, description="how often it answers a move (the policy's cadence)")
    replan_s: float = Field(30.0, gt=0, description="how often it re-chooses the target split")
    horizon_s: float = Field(45.0, gt=0, description="simulated future per candidate split, held fixed")
    grid: int = Field(8, ge=2, le=64, description="candidate splits: P, D, M in units of N / grid")
    violation_weight: float = Field(1.0, ge=0, description="score = good − weight × (misses + doomed queued)")
    min_gain: float = Field(0.02, ge=0, description="a new target must beat holding the current split by "
                            "this fraction of |its score| (hysteresis against near-ties)")


TEACHER_CONFIGS: dict[str, type[TeacherConfig]] = {
    "oracle-moves": MoveOracleConfig,
    "oracle-split": SplitOracleConfig,
}
