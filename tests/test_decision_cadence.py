"""``action.decision_every`` (issue 12): the policy moves on every k-th control step only, the env masks
all but the no-op in between, the lookahead teacher plans exactly on the decision steps, imitation keeps
only states with a choice, and a deployed checkpoint keeps the cadence it was trained with."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from agents.imitation import collect
from arrow_rl.cluster.base import Role
from envs import PDClusterEnv
from envs.config import EnvConfig

BASE = {"action": {"kind": "moves", "decision_every": 3}, "observation": {"kind": "pools"},
        "preset": "h100-llama3.1-70b-tp4", "num_instances": 8, "slo_ttft_s": 10.0, "slo_tpot_s": 0.125,
        "episode": {"traces": ["azure-code"], "duration_s": 12, "drain_s": 2, "rate_scale": [8.0, 8.0]}}


def test_between_decisions_only_the_noop_is_valid_and_a_move_is_refused():
    env = PDClusterEnv({**BASE, "teacher": None})
    _obs, info = env.reset(seed=0)
    pattern, refused = [], []
    for step in range(7):
        mask = env.action_masks()
        pattern.append(bool(info["decision_step"]))
        assert np.array_equal(mask, info["action_mask"])
        if not info["decision_step"]:
            assert mask.tolist() == [True] + [False] * (mask.size - 1)
        before = [v.role for v in env.control_state.instances]
        move = 1 + 3 * 0   # P->D by the smallest fraction: valid at 4P:4D on a decision step
        _obs, _r, term, _t, info = env.step(move)
        refused.append(bool(info["invalid_action"]))
        if not pattern[-1]:
            assert [v.role for v in env.control_state.instances] == before or info["applied_flips"] == []
        if term or _t:
            break
    assert pattern[:7] == [True, False, False, True, False, False, True][: len(pattern)]
    assert [r for r, d in zip(refused, pattern) if not d] == [True] * pattern.count(False)


def test_the_oracle_teacher_plans_on_decision_steps_and_labels_zero_between():
    env = PDClusterEnv({**BASE, "teacher": "oracle-moves",
                        "teacher_config": {"decision_interval_s": 3.0, "lookahead_s": 4.0, "candidate_fractions": [0.125]}})
    _obs, info = env.reset(seed=1)
    evaluations = []
    for _ in range(6):
        if not info["decision_step"]:
            assert info["teacher_action"] == 0
        before = env.teacher.evaluations
        _obs, _r, term, _t, info = env.step(0)
        evaluations.append(env.teacher.evaluations - before)
        if term or _t:
            break
    # it cloned the emulator (planned) exactly when the next observation was a decision step
    assert [e > 0 for e in evaluations[:5]] == [False, False, True, False, False]


def test_a_teacher_slower_than_the_cadence_is_refused_by_name():
    with pytest.raises(ValidationError, match="decision_interval_s=5 is longer than"):
        EnvConfig(**{**BASE, "teacher": "oracle-moves", "teacher_config": {"decision_interval_s": 5.0}})
    with pytest.raises(ValidationError, match="decision_every > 1 needs action.kind"):
        EnvConfig(**{**BASE, "action": {"kind": "target", "decision_every": 2}, "observation": {"kind": "cluster"}})


def test_imitation_records_only_states_with_a_choice():
    env = PDClusterEnv({**BASE, "teacher": "oracle-moves",
                        "teacher_config": {"decision_interval_s": 3.0, "lookahead_s": 2.0, "candidate_fractions": [0.125]}})
    roll = collect([env], 9, act=lambda o, m, t: t, rng=np.random.default_rng(0), beta=1.0, seed=0)
    assert roll.obs.shape[0] == 9
    assert len(roll.dataset) == 3          # steps 0, 3, 6
    assert (roll.dataset.masks.sum(axis=1) > 1).all()


def test_a_checkpoint_keeps_the_cadence_it_was_trained_with(tmp_path):
    from sb3_contrib import MaskablePPO

    from agents.checkpoint import save_checkpoint
    from agents.config import load_config
    from agents.controller import CheckpointController
    from agents.train import checkpoint_metadata
    from pathlib import Path

    meta = checkpoint_metadata(load_config(Path(__file__).resolve().parents[1] / "configs/train/generalist.yaml"))
    every = meta["env_config"]["action"]["decision_every"]
    assert every == 5    # the shipped generalist plans at the oracle's 5 s cadence
    env = PDClusterEnv({**meta["env_config"], "teacher": None, "distribution": None, "num_instances": 8,
                        "episode": {"traces": ["azure-code"], "duration_s": 12, "drain_s": 1, "rate_scale": [4.0, 4.0]}})
    model = MaskablePPO("MlpPolicy", env, n_steps=16, batch_size=16, seed=0, policy_kwargs={"net_arch": [8]})
    path = save_checkpoint(tmp_path / "g", model, meta)
    ctrl = CheckpointController.load(path)
    env.reset(seed=0)
    ctrl.reset(env.cluster.info)
    asked, masks = [], []
    n = ctrl.checkpoint.n_actions
    # a policy that always wants action 1 (a move), by far
    ctrl.checkpoint.scores = lambda obs: asked.append(True) or np.where(np.arange(n) == 1, 10.0, 0.0)
    observe = ctrl.observe
    ctrl.observe = lambda state: (lambda r: masks.append(r[1]) or r)(observe(state))
    moved = [bool(ctrl.act(env.control_state)) for _ in range(11)]
    assert len(asked) == 3 and moved == [i % every == 0 for i in range(11)]
    assert all(masks[i].sum() > 1 for i in range(0, 11, every))
    assert all(v.role in (Role.PREFILL, Role.DECODE, Role.MIXED) for v in env.control_state.instances)
