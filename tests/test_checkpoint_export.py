"""Bring your own agent: a model from a plain SB3 script on the registered env, exported, runs where
the shipped checkpoints run (the controller registry behind evaluate, suite run and deploy)."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from typer.testing import CliRunner

import envs  # noqa: F401  (registers arrow_rl/PDCluster-v0)
from agents import load_controller
from agents.checkpoint import CheckpointError, CheckpointMismatchError, read_metadata
from agents.controller import CheckpointController
from agents.export import export_model, infer_algo
from arrow_rl.cli import app

SHORT = {"episode": {"duration_s": 15.0, "drain_s": 5.0}}   # short episodes keep the user script fast


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    """What a researcher writes: gymnasium.make, PPO, learn, save (a few hundred steps)."""
    env = gym.make("arrow_rl/PDCluster-v0", **SHORT)
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0, policy_kwargs={"net_arch": [16, 16]})
    model.learn(256)
    path = tmp_path_factory.mktemp("user") / "my_ppo"
    model.save(path)
    return model, env, path.with_suffix(".zip")


def _run_short_span(ckpt) -> float:
    """The registry path every command loads a controller through, on 20 s of the Azure trace."""
    from arrow_rl.cluster.emulator import EmulatorConfig
    from arrow_rl.controllers.registry import make_policy
    from arrow_rl.evaluation.runner import run_policy
    from arrow_rl.workload.loaders import load_workload

    policy = make_policy(str(ckpt), 8)
    assert isinstance(policy.controller, CheckpointController)
    workload = load_workload("azure-conv").window(0.0, 20.0)
    result = run_policy(workload, EmulatorConfig(preset="h100-llama3.1-8b-tp1", num_instances=8,
                                                 slo_ttft_s=2.0, slo_tpot_s=0.1), policy)
    assert result.num_requests == len(workload)
    return result.attainment


def test_export_api_writes_a_checkpoint_the_controller_loads(user_model, tmp_path):
    model, env, _ = user_model
    ckpt = export_model(model, tmp_path / "mine", env=env)
    meta = read_metadata(ckpt)
    assert meta["algo"] == "ppo" and meta["name"] == "mine" and meta["env_id"] == "arrow_rl/PDCluster-v0"
    assert meta["env_config"]["episode"]["duration_s"] == 15.0   # the env's own config, overrides included
    assert meta["env_config"]["episode"]["rate_scale"] == list(envs.VARIANTS["arrow_rl/PDCluster-v0"]["episode"]["rate_scale"])
    controller = load_controller(ckpt)
    obs, _ = env.reset(seed=3)
    # the exported policy acts on the env's observation exactly as the model does
    assert controller.checkpoint.act(obs) == int(model.predict(obs, deterministic=True)[0])
    assert 0.0 <= _run_short_span(ckpt) <= 1.0


def test_export_command_turns_a_saved_zip_into_a_checkpoint(user_model, tmp_path):
    _, _, zip_path = user_model
    # given as a controller as it is, the plain zip is refused with the way to fix it
    with pytest.raises(CheckpointError, match=r"arrow-rl checkpoint export MODEL\.zip --out DIR"):
        load_controller(zip_path)
    assert infer_algo(zip_path) == "ppo"
    env_yaml = tmp_path / "train.yaml"   # the env block of a training config, as the model was trained on it
    env_yaml.write_text("env:\n  id: arrow_rl/PDCluster-v0\n  episode: {duration_s: 15, drain_s: 5}\n")
    out = tmp_path / "ckpt"
    r = CliRunner().invoke(app, ["checkpoint", "export", str(zip_path), "--env-config", str(env_yaml), "--out", str(out)])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["training"]["exported_from"] == str(zip_path) and meta["env_config"]["episode"]["drain_s"] == 5.0
    assert 0.0 <= _run_short_span(out) <= 1.0
    # an existing directory is not overwritten without --force
    r = CliRunner().invoke(app, ["checkpoint", "export", str(zip_path), "--out", str(out)])
    assert r.exit_code == 2 and "already exists" in r.output
    r = CliRunner().invoke(app, ["checkpoint", "export", str(tmp_path / "nope.zip"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "nope.zip: model file not found" in r.output


def test_vecnormalize_statistics_travel_with_the_export(tmp_path):
    from sb3_contrib import MaskablePPO

    venv = VecNormalize(DummyVecEnv([lambda: gym.make("arrow_rl/PDCluster-v0", **SHORT)]), norm_reward=False)
    model = MaskablePPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, policy_kwargs={"net_arch": [8]})
    model.learn(32)
    ckpt = export_model(model, tmp_path / "norm", env=venv)
    meta = read_metadata(ckpt)
    assert meta["normalized"] is True and meta["algo"] == "maskable_ppo"
    controller = load_controller(ckpt)
    obs = venv.get_original_obs()[0]
    assert controller.checkpoint.normalizer is not None
    assert (abs(controller.checkpoint.normalize(obs) - venv.normalize_obs(obs)) < 1e-5).all()
    # the same from files: model.save + VecNormalize.save, then the command
    model.save(tmp_path / "masked")
    venv.save(str(tmp_path / "stats.pkl"))
    assert infer_algo(tmp_path / "masked.zip") == "maskable_ppo"
    env_yaml = tmp_path / "train.yaml"
    env_yaml.write_text("env:\n  episode: {duration_s: 15, drain_s: 5}\n")
    r = CliRunner().invoke(app, ["checkpoint", "export", str(tmp_path / "masked.zip"), "--env-config", str(env_yaml),
                                 "--vecnormalize", str(tmp_path / "stats.pkl"), "--out", str(tmp_path / "from_files")])
    assert r.exit_code == 0, r.output
    again = load_controller(tmp_path / "from_files")
    assert (abs(again.checkpoint.normalize(obs) - venv.normalize_obs(obs)) < 1e-5).all()


def test_a_model_that_does_not_fit_the_env_config_is_refused(user_model, tmp_path):
    model, _, _ = user_model
    # a shorter observation history and more flips per step: the user exported with the wrong config
    with pytest.raises(CheckpointMismatchError, match=r"observation size 148 \(model\) vs 74 \(env config\); action space Discrete\(5\) \(model\) "
                       r"vs Discrete\(7\)"):
        export_model(model, tmp_path / "wrong", env_config={"observation": {"history": 2},
                                                             "action": {"max_flips_per_step": 3}})
    assert not (tmp_path / "wrong").exists()
    with pytest.raises(CheckpointError, match="not a PDClusterEnv"):
        export_model(model, tmp_path / "cartpole", env=gym.make("CartPole-v1"))


def test_a_plain_function_runs_in_the_controller_seat():
    from arrow_rl.cluster.base import Flip, Role
    from arrow_rl.cluster.emulator import EmulatorConfig
    from arrow_rl.control import Controller
    from arrow_rl.evaluation.runner import run_policy
    from arrow_rl.workload.loaders import load_workload

    from agents.custom import FunctionController, policy_for

    calls = []

    def all_but_one_to_prefill(state):   # a deliberately blunt rule: its flips must show in the run
        calls.append(state.now)
        decode = [i for i in state.instances if i.role is Role.DECODE]
        return [Flip(i.instance_id, Role.PREFILL) for i in decode[1:]]

    controller = FunctionController(all_but_one_to_prefill)
    assert isinstance(controller, Controller) and controller.name == "all_but_one_to_prefill"
    policy = policy_for(controller, 8)
    workload = load_workload("azure-conv").window(0.0, 10.0)
    result = run_policy(workload, EmulatorConfig(preset="h100-llama3.1-8b-tp1", num_instances=8,
                                                 slo_ttft_s=2.0, slo_tpot_s=0.1), policy)
    assert calls and controller.info is not None and controller.info.num_instances == 8
    assert len(result.flips) == 3 and result.policy == "all_but_one_to_prefill"
    with pytest.raises(TypeError, match="return arrow_rl.cluster.base.Flip"):
        FunctionController(lambda s: [3]).act(None)


def test_suite_run_ranks_the_exported_checkpoint(user_model, tmp_path):
    # a one-scenario tiny suite (quick protocol): the checkpoint gets a serving rate, not "n/a"
    model, env, _ = user_model
    ckpt = export_model(model, tmp_path / "mine", env=env)
    out = tmp_path / "suite.json"
    r = CliRunner().invoke(app, ["suite", "run", "--suite", "tests/data/tiny_suite.yaml", "--scenarios", "tiny-poisson",
                                 "--quick", "--controllers", f"arrow,{ckpt}", "--json", str(out)])
    assert r.exit_code == 0, r.output
    result = json.loads(out.read_text())["scenarios"]["tiny-poisson"]["controllers"][str(ckpt)]
    assert result["serving_rate"] > 0 and len(result["per_seed"]) == 3
