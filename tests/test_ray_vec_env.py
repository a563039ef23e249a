"""``vec_env: ray`` (``agents.ray_vec_env.RayVecEnv``): Ray actors holding batches of envs behave
as SB3's local vector env, step for step, for the same seed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray")

from agents.config import load_config  # noqa: E402
from agents.train import build_vec_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "train" / "smoke.yaml"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _venv(kind: str, n_envs: int = 3, seed: int = 7):
    cfg = load_config(SMOKE, {"n_envs": n_envs, "vec_env": kind, "seed": seed})
    # 2 envs per actor: 3 envs make one full and one partial worker (the index mapping is exercised)
    cfg = cfg.model_copy(update={"ray": cfg.ray.model_copy(update={"envs_per_worker": 2})})
    return build_vec_env(cfg)


def test_same_seed_same_observations_rewards_and_episode_ends_as_the_local_vec_env(local_ray):
    local, remote = _venv("dummy"), _venv("ray")
    try:
        assert type(remote).__name__ == "RayVecEnv" and len(remote.workers) == 2
        assert remote.observation_space == local.observation_space and remote.action_space == local.action_space
        obs_l, obs_r = local.reset(), remote.reset()
        np.testing.assert_array_equal(obs_r, obs_l)
        assert obs_r.dtype == obs_l.dtype
        rng = np.random.default_rng(0)  # one fixed action sequence, drawn from the valid actions
        episode_ends = 0
        for _ in range(60):
            masks = np.array(local.env_method("action_masks"))
            np.testing.assert_array_equal(np.array(remote.env_method("action_masks")), masks)
            actions = np.array([rng.choice(np.flatnonzero(m)) for m in masks])
            obs_l, rew_l, done_l, info_l = local.step(actions)
            obs_r, rew_r, done_r, info_r = remote.step(actions)
            np.testing.assert_array_equal(obs_r, obs_l)
            np.testing.assert_array_equal(rew_r, rew_l)
            assert rew_r.dtype == rew_l.dtype == np.float32
            np.testing.assert_array_equal(done_r, done_l)
            for a, b in zip(info_r, info_l):
                assert a["TimeLimit.truncated"] == b["TimeLimit.truncated"]
                if "terminal_observation" in b:
                    np.testing.assert_array_equal(a["terminal_observation"], b["terminal_observation"])
            episode_ends += int(done_l.sum())
        assert episode_ends > 0, "the run should cross an episode end (auto-reset path)"
    finally:
        local.close()
        remote.close()


@pytest.fixture
def ray_venv(local_ray):
    """3 envs in 2 actors (both of the module's 2 CPUs: closed after each test)."""
    venv = _venv("ray")
    yield venv
    venv.close()


def test_attributes_and_methods_reach_the_right_envs(ray_venv):
    from stable_baselines3.common.monitor import Monitor

    assert ray_venv.env_is_wrapped(Monitor) == [True, True, True]
    ray_venv.set_attr("tag", "x", indices=[2])
    assert ray_venv.get_attr("tag", indices=[2]) == ["x"]
    with pytest.raises(AttributeError):  # set on env 2 only (env 0 shares its actor)
        ray_venv.get_attr("tag", indices=[0])
    assert ray_venv.has_attr("action_masks") and not ray_venv.has_attr("no_such_attribute")
    assert len(ray_venv.env_method("action_masks", indices=[0, 2])) == 2


def test_maskable_ppo_on_ray_envs_learns_the_same_weights_as_on_local_envs(local_ray):
    """Learner on the driver, rollouts from the actors: same seed, same model after a real update."""
    import torch

    from agents.train import build_model

    weights = {}
    for kind in ("dummy", "ray"):
        cfg = load_config(SMOKE, {"n_envs": 3, "vec_env": kind, "n_steps": 16, "batch_size": 16})
        venv = build_vec_env(cfg)
        try:
            model = build_model(cfg, venv)
            model.learn(total_timesteps=48)
            weights[kind] = {k: v.clone() for k, v in model.policy.state_dict().items()}
        finally:
            venv.close()
    assert weights["ray"].keys() == weights["dummy"].keys()
    for k, v in weights["dummy"].items():
        assert torch.equal(weights["ray"][k], v), k


def test_workers_the_cluster_cannot_place_are_an_error_not_a_hang(local_ray):
    from agents.envs_bridge import env_thunk
    from agents.ray_vec_env import RayVecEnv

    thunks = [env_thunk("arrow_rl/PDCluster-v0", {}) for _ in range(3)]
    # 3 one-CPU workers on a 2-CPU Ray: the third can never start
    with pytest.raises(ValueError, match=r"Ray started [0-2] of 3 env workers \(1 CPU each\) within 1 s; the "
                                         r"cluster has [\d.]+ CPUs free: lower n_envs"):
        RayVecEnv(thunks, envs_per_worker=1, start_timeout_s=1.0)
    assert ray.is_initialized()  # the module's Ray is not shut down by the failed VecEnv


def test_train_backend_ray_without_ray_installed_says_how_to_install(monkeypatch):
    from arrow_rl.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)
    res = CliRunner().invoke(app, ["train", "--config", str(SMOKE), "--backend", "ray", "--no-progress"])
    assert res.exit_code == 2
    assert 'pip install -e ".[ray]"' in res.output and "Traceback" not in res.output
