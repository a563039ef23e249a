"""The env-side privileged teachers by name (``EnvConfig.teacher`` in ``ENV_TEACHERS``).

One lookup for the env config's validation and the env's construction, so the two never disagree.
Imported lazily by both: the teachers import the moves codec, which imports the env config.
"""

from __future__ import annotations

from envs.move_teacher import CloneTeacher, MoveOracleConfig, MoveOracleTeacher, TeacherConfig
from envs.split_teacher import SplitOracleConfig, SplitOracleTeacher

TEACHERS: dict[str, tuple[type[TeacherConfig], type[CloneTeacher]]] = {
    "oracle-moves": (MoveOracleConfig, MoveOracleTeacher),
    "oracle-split": (SplitOracleConfig, SplitOracleTeacher),
}
