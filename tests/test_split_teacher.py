"""The target-split teacher (``teacher: oracle-split``, envs/split_teacher.py): its candidate grid,
its moves toward a target, its hysteresis, and its labels on the env."""

from __future__ import annotations

import pytest

from envs import PDClusterEnv
from envs.config import ActionConfig, EnvConfig
from envs.moves import MoveCodec, role_counts
from envs.split_teacher import SplitOracleConfig, SplitOracleTeacher, candidate_splits

THREE = {"action": {"kind": "moves"}, "observation": {"kind": "pools"}}
SMALL = {**THREE, "preset": "h100-llama3.1-70b-tp4", "slo_ttft_s": 10.0, "slo_tpot_s": 0.125,
         "teacher": "oracle-split",
         "episode": {"traces": ["azure-conv"], "duration_s": 20, "drain_s": 5, "rate_scale": [8.0, 8.0]}}


def run_teacher_episode(env: PDClusterEnv, seed: int) -> tuple[dict, list[tuple[int, int, int]]]:
    _obs, info = env.reset(seed=seed)
    targets = []
    while True:
        _obs, _r, term, trunc, info = env.step(info["teacher_action"])
        targets.append(env.teacher.target)
        if term or trunc:
            return info, targets


def test_the_grid_holds_every_valid_split_once():
    codec = MoveCodec(ActionConfig(kind="moves"), 8)
    splits = candidate_splits(codec, 8)
    assert len(splits) == len(set(splits)) == 29   # P, D >= 1 with P + D <= 8, and all-MIXED
    assert all(codec.valid_split(s) for s in splits)
    assert (0, 0, 8) in splits and (6, 2, 0) in splits and (5, 1, 2) in splits
    small = candidate_splits(MoveCodec(ActionConfig(kind="moves"), 4), 8)   # eighths of 4 round to halves
    assert len(small) == len(set(small)) and all(sum(s) == 4 for s in small)
    assert len(small) < 29


def test_toward_takes_the_move_closest_to_the_target_and_stops_there():
    codec = MoveCodec(ActionConfig(kind="moves"), 8)
    teacher = SplitOracleTeacher(codec)
    assert teacher.toward((4, 4, 0), (4, 4, 0)) == 0
    a = teacher.toward((1, 7, 0), (6, 2, 0))
    src, dst, _k = codec.describe(a)
    assert (src.value, dst.value) == ("decode", "prefill")
    counts, steps = (1, 7, 0), 0
    while counts != (6, 2, 0):   # the moves reach the target and the label is then the no-op
        counts = codec.result(teacher.toward(counts, (6, 2, 0)), counts)
        steps += 1
        assert steps < 10
    assert teacher.toward(counts, (6, 2, 0)) == 0


def test_a_quiet_cluster_keeps_its_split():
    env = PDClusterEnv({**SMALL, "num_instances": 4,
                        "episode": {"traces": ["azure-conv"], "duration_s": 20, "drain_s": 5, "rate_scale": [0.01, 0.01]}})
    info, _ = run_teacher_episode(env, seed=0)
    assert info["episode_stats"]["flip_count"] == 0


def test_an_overloaded_prefill_pool_gets_a_target_with_more_prefill():
    # 1 prefill for 7 decode instances under heavy conversation traffic: every split with more prefill
    # serves more within the horizon
    env = PDClusterEnv({**SMALL, "num_instances": 8, "initial_prefill": 1,
                        "teacher_config": {"horizon_s": 15.0, "replan_s": 10.0}})
    _obs, info = env.reset(seed=0)
    teacher: SplitOracleTeacher = env.teacher
    assert isinstance(teacher, SplitOracleTeacher)
    assert teacher.target is not None and teacher.target[0] > 1
    assert info["teacher_action"] != 0 and info["action_mask"][info["teacher_action"]]
    assert teacher.evaluations == len(teacher.splits)   # the current split is one of the grid's


def test_the_target_is_held_between_replans():
    env = PDClusterEnv({**SMALL, "num_instances": 8, "initial_prefill": 1,
                        "teacher_config": {"horizon_s": 10.0, "replan_s": 10.0},
                        "episode": {"traces": ["azure-conv"], "duration_s": 24, "drain_s": 2, "rate_scale": [8.0, 8.0]}})
    info, targets = run_teacher_episode(env, seed=1)
    teacher: SplitOracleTeacher = env.teacher
    plans = teacher.evaluations / len(teacher.splits)
    assert 2 <= plans <= 4   # t = 0, 10, 20 (+ the current split when it is off the grid)
    assert len(set(targets[:9])) == 1   # steps 1..9 follow the plan made at t = 0


def test_hysteresis_holds_the_split_unless_a_target_wins_by_min_gain():
    env = PDClusterEnv({**SMALL, "num_instances": 8, "initial_prefill": 1,
                        "teacher_config": {"horizon_s": 15.0, "min_gain": 1e9}})
    _obs, info = env.reset(seed=0)
    assert env.teacher.target == role_counts(env.control_state.instances)
    assert info["teacher_action"] == 0


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="teacher_config.*horizon"):
        SplitOracleConfig.from_mapping({"horizon": 10})
    with pytest.raises(ValueError, match="teacher_config.*grid"):
        SplitOracleConfig.from_mapping({"grid": 1})
    with pytest.raises(ValueError, match="oracle-split.*moves"):
        EnvConfig(teacher="oracle-split")
    with pytest.raises(ValueError, match="decision_interval_s=10"):
        EnvConfig(**{**THREE, "teacher": "oracle-split", "action": {"kind": "moves", "decision_every": 5},
                     "teacher_config": {"decision_interval_s": 10.0}})


def test_every_env_teacher_name_has_its_classes():
    from envs.config import ENV_TEACHERS
    from envs.teachers import TEACHERS

    assert set(ENV_TEACHERS) == set(TEACHERS)
