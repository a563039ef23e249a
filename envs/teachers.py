"""The env-side privileged teachers by name (``EnvConfig.teacher`` in ``ENV_TEACHERS``): each name's
settings class and teacher class, for the env's construction.

The settings classes alone (``envs.teacher_config``) are what the env config validates with, so
the config never imports the teachers (they import the moves codec, which imports the config).
"""

from __future__ import annotations

from envs.clone_teacher import CloneTeacher
from envs.move_teacher import MoveOracleTeacher
from envs.split_teacher import SplitOracleTeacher
from envs.teacher_config import TEACHER_CONFIGS, TeacherConfig

_TEACHER_CLASSES: dict[str, type[CloneTeacher]] = {
    "oracle-moves": MoveOracleTeacher,
    "oracle-split": SplitOracleTeacher,
}
TEACHERS: dict[str, tuple[type[TeacherConfig], type[CloneTeacher]]] = {
    name: (config, _TEACHER_CLASSES[name]) for name, config in TEACHER_CONFIGS.items()
}
