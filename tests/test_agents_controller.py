"""Checkpoints as drop-in controllers: the same Controller contract as the heuristics, the same
observation as the env, clear errors when the cluster does not fit."""

from __future__ import annotations

import json
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers the env ids)
from agents import load_controller
from agents.checkpoint import CheckpointError, CheckpointMismatchError
from agents.config import config_from_dict
from agents.controller import CheckpointController
from agents.train import train
from arrow_rl.cluster.base import ClusterInfo, Flip, Mode, Role
from arrow_rl.control import ControlState, Controller

torch.set_num_threads(1)

ENV = {"id": "arrow_rl/PDCluster-v0", "episode": {"traces": ["azure-conv"], "duration_s": 15.0, "drain_s": 5.0}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = config_from_dict({
        "name": "ctrl_test", "algo": "maskable_ppo", "n_envs": 1, "n_timesteps": 128, "n_steps": 64,
        "batch_size": 32, "n_epochs": 1, "policy_kwargs": {"net_arch": [16]}, "env": ENV,
        "eval": {"enabled": False}, "tensorboard": False,
    })
    return train(cfg, run_root=tmp_path_factory.mktemp("runs"), progress=False).final_dir


def _env():
    return gym.make("arrow_rl/PDCluster-v0", **{k: v for k, v in ENV.items() if k != "id"})


def _state_and_info() -> tuple[ControlState, ClusterInfo]:
    env = _env()
    env.reset(seed=0)
    for _ in range(3):
        env.step(0)
    u = env.unwrapped
    return u.control_state, u.cluster.info


@pytest.mark.parametrize("spec", ["arrow", "arrow-interval", "static:3", "checkpoint"])
def test_every_controller_honours_the_same_contract(spec, checkpoint):
    controller = load_controller(checkpoint if spec == "checkpoint" else spec, num_instances=8)
    assert isinstance(controller, Controller)
    assert isinstance(controller.name, str) and controller.name
    state, info = _state_and_info()
    controller.reset(info)
    before = repr(state)
    flips = controller.act(state)
    assert isinstance(flips, list) and all(isinstance(f, Flip) for f in flips)
    assert repr(state) == before, "act must not mutate the state"


def test_checkpoint_controller_sees_exactly_the_env_observation(checkpoint):
    """Acting from ControlState alone reproduces the action the policy takes on the env's own obs."""
    controller = load_controller(checkpoint)
    env = _env()
    obs, _ = env.reset(seed=1)
    u = env.unwrapped
    controller.reset(u.cluster.info)
    for _ in range(12):
        c_obs, c_mask = controller.observe(u.control_state)
        np.testing.assert_array_equal(c_obs, obs)
        np.testing.assert_array_equal(c_mask, env.unwrapped.action_masks())
        action = controller.checkpoint.act(obs, c_mask)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break


def test_checkpoint_round_trip_acts_identically(checkpoint):
    a, b = load_controller(checkpoint), load_controller(checkpoint)
    state, info = _state_and_info()
    a.reset(info)
    b.reset(info)
    assert a.act(state) == b.act(state)


def test_too_large_cluster_names_max_instances(checkpoint):
    controller = load_controller(checkpoint)
    _, info = _state_and_info()
    big = ClusterInfo(16, info.preset, info.slo, Mode.DISAGGREGATED, (Role.PREFILL,) * 8 + (Role.DECODE,) * 8)
    with pytest.raises(CheckpointMismatchError, match=r"16 instances.*max_instances=8"):
        controller.reset(big)


def test_colocated_cluster_is_rejected(checkpoint):
    controller = load_controller(checkpoint)
    _, info = _state_and_info()
    colo = ClusterInfo(8, info.preset, info.slo, Mode.COLOCATED, info.initial_roles)
    with pytest.raises(CheckpointMismatchError, match="disaggregated"):
        controller.reset(colo)


def test_a_two_role_checkpoint_refuses_a_cluster_with_mixed_instances_up_front(checkpoint):
    controller = load_controller(checkpoint)
    _, info = _state_and_info()
    mixed = ClusterInfo(8, info.preset, info.slo, Mode.DISAGGREGATED, (Role.PREFILL,) * 4 + (Role.DECODE,) * 3 + (Role.MIXED,))
    with pytest.raises(CheckpointMismatchError, match="MIXED instances.*prefill and decode only"):
        controller.reset(mixed)


def _edited(checkpoint, tmp_path, edit):
    copy = tmp_path / "edited"
    shutil.copytree(checkpoint, copy)
    meta = json.loads((copy / "metadata.json").read_text())
    edit(meta)
    (copy / "metadata.json").write_text(json.dumps(meta))
    return copy


def test_observation_size_mismatch_is_named(checkpoint, tmp_path):
    path = _edited(checkpoint, tmp_path, lambda m: m["env_config"]["observation"].update(history=2))
    controller = load_controller(path)
    _, info = _state_and_info()
    with pytest.raises(CheckpointMismatchError, match=r"observation size 148 \(checkpoint\) vs 74"):
        controller.reset(info)


def test_action_space_mismatch_is_named(checkpoint, tmp_path):
    path = _edited(checkpoint, tmp_path, lambda m: m["env_config"]["action"].update(max_flips_per_step=3))
    controller = load_controller(path)
    _, info = _state_and_info()
    with pytest.raises(CheckpointMismatchError, match=r"action space Discrete\(5\) \(checkpoint\) vs Discrete\(7\)"):
        controller.reset(info)


def test_missing_checkpoint_directory_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_controller(str(tmp_path / "no_such_checkpoint"))


def test_checkpoint_runs_under_the_evaluation_runner(checkpoint):
    from arrow_rl.controllers.registry import make_policy
    from arrow_rl.evaluation.runner import run_policy
    from arrow_rl.cluster.emulator.config import EmulatorConfig
    from arrow_rl.workload.loaders import load_workload

    policy = make_policy(str(checkpoint), 8)
    assert isinstance(policy.controller, CheckpointController)
    workload = load_workload("azure-conv").window(0.0, 20.0)
    result = run_policy(workload, EmulatorConfig(preset="h100-llama3.1-8b-tp1", num_instances=8,
                                                 slo_ttft_s=2.0, slo_tpot_s=0.1), policy)
    assert 0.0 <= result.attainment <= 1.0 and result.num_requests == len(workload)
