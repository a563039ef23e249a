"""Training smoke tests and the checkpoint format, on the toy teacher env (no emulator needed)."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.checkpoint import (
    METADATA_FILE,
    CheckpointError,
    CheckpointMismatchError,
    check_spaces,
    load_checkpoint,
    read_metadata,
)
from agents.config import config_from_dict
from agents.imitation import env_masks
from agents.toy import TOY_ENV_ID, register_toy_env
from agents.train import train

torch.set_num_threads(1)
register_toy_env()


def _config(algo: str, **extra):
    raw = {
        "name": f"smoke_{algo}",
        "algo": algo,
        "n_envs": 2,
        "n_timesteps": 2048,
        "policy_kwargs": {"net_arch": [16, 16]},
        "env": {"id": TOY_ENV_ID, "episode_steps": 32},
        "eval": {"freq": 1024, "n_episodes": 1},
        "tensorboard": False,
    }
    if algo != "dqn":
        raw.update({"n_steps": 256, "batch_size": 128, "n_epochs": 2, "learning_rate": "lin_3e-4"})
    else:
        raw.update({"learning_starts": 256, "buffer_size": 2048, "train_freq": 4})
    raw.update(extra)
    return config_from_dict(raw)


def _obs_and_masks(n: int = 50):
    env = gym.make(TOY_ENV_ID, episode_steps=32)
    obs, masks = [], []
    o, _ = env.reset(seed=1)
    for _ in range(n):
        obs.append(o)
        masks.append(env_masks(env))
        o, *_ = env.step(int(env.action_space.sample()))
    return np.array(obs, np.float32), np.array(masks)


@pytest.mark.parametrize("algo", ["ppo", "maskable_ppo", "dqn"])
def test_training_smoke_saves_loads_and_acts(algo, tmp_path):
    result = train(_config(algo), run_root=tmp_path, progress=False)
    assert (result.final_dir / "model.zip").is_file()
    assert result.report["evaluations"], "the held-out evaluation ran"
    ckpt = load_checkpoint(result.final_dir)
    obs, masks = _obs_and_masks(20)
    actions = [ckpt.act(o, m) for o, m in zip(obs, masks)]
    assert all(m[a] for a, m in zip(actions, masks)), "deterministic actions respect the masks"
    assert (result.run_dir / "progress.csv").is_file() and (result.run_dir / "config.yaml").is_file()


def test_checkpoint_round_trip_gives_identical_actions(tmp_path):
    from agents.inference import greedy_actions

    result = train(_config("maskable_ppo", n_timesteps=512, eval={"enabled": False}), run_root=tmp_path, progress=False)
    from sb3_contrib import MaskablePPO

    in_memory = MaskablePPO.load(result.final_dir / "model.zip")
    ckpt = load_checkpoint(result.final_dir)
    obs, masks = _obs_and_masks()
    np.testing.assert_array_equal(greedy_actions(in_memory, obs, masks), [ckpt.act(o, m) for o, m in zip(obs, masks)])
    again = load_checkpoint(result.final_dir)
    np.testing.assert_array_equal([again.act(o, m) for o, m in zip(obs, masks)], [ckpt.act(o, m) for o, m in zip(obs, masks)])


def test_pretrain_then_rl_keeps_clone_and_best(tmp_path):
    cfg = _config("maskable_ppo", n_timesteps=1024,
                  pretrain={"teacher_steps": 1000, "dagger_rounds": 1, "dagger_steps": 500, "epochs": 5})
    result = train(cfg, run_root=tmp_path, progress=False)
    assert result.clone_dir is not None and (result.clone_dir / "model.zip").is_file()
    assert result.best_dir is not None
    meta = read_metadata(result.clone_dir)
    assert meta["training"]["stage"] == "clone"
    assert meta["training"]["pretrain"]["rounds"][0]["train"]["accuracy"] > 0.5
    assert meta["seed"] == cfg.seed and meta["train_config"]["algo"] == "maskable_ppo"


def test_vecnormalize_statistics_travel_with_the_checkpoint(tmp_path):
    result = train(_config("ppo", n_timesteps=512, normalize=True, eval={"enabled": False}), run_root=tmp_path, progress=False)
    assert (result.final_dir / "vecnormalize.pkl").is_file()
    ckpt = load_checkpoint(result.final_dir)
    assert ckpt.normalizer is not None
    obs, _ = _obs_and_masks(1)
    scaled = ckpt.normalize(obs[0])
    assert scaled.shape == obs[0].shape and not np.allclose(scaled, obs[0])


def test_same_config_and_seed_reproduce_the_same_policy(tmp_path):
    cfg = _config("ppo", n_timesteps=512, eval={"enabled": False}, n_envs=1)
    a = load_checkpoint(train(cfg, run_root=tmp_path / "a", progress=False).final_dir)
    b = load_checkpoint(train(cfg, run_root=tmp_path / "b", progress=False).final_dir)
    for pa, pb in zip(a.model.policy.parameters(), b.model.policy.parameters()):
        torch.testing.assert_close(pa, pb)


def test_mismatched_spaces_name_the_mismatch():
    from gymnasium import spaces

    meta = {"observation_space": {"type": "Box", "shape": [54], "dtype": "float32"},
            "action_space": {"type": "Discrete", "n": 5}}
    with pytest.raises(CheckpointMismatchError, match=r"observation size 54 \(checkpoint\) vs 60"):
        check_spaces(meta, spaces.Box(0, 1, (60,)), spaces.Discrete(5))
    with pytest.raises(CheckpointMismatchError, match=r"action space Discrete\(5\) \(checkpoint\) vs Discrete\(9\)"):
        check_spaces(meta, spaces.Box(0, 1, (54,)), spaces.Discrete(9))


def test_broken_checkpoint_directories_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        read_metadata(tmp_path / "nope")
    (tmp_path / "c").mkdir()
    with pytest.raises(CheckpointError, match="metadata.json: missing"):
        read_metadata(tmp_path / "c")
    (tmp_path / "c" / METADATA_FILE).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not an arrow-rl checkpoint"):
        read_metadata(tmp_path / "c")
    (tmp_path / "c" / METADATA_FILE).write_text(json.dumps({"format": "arrow-rl-checkpoint", "format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version 99"):
        read_metadata(tmp_path / "c")


def test_init_from_starts_rl_from_the_checkpoints_weights(tmp_path):
    """``init_from`` loads the networks and the optimizer state (the run's first evaluation is the
    starting policy's), and ``checkpoint_every`` leaves a snapshot per interval beside best/final."""
    base = train(_config("maskable_ppo", n_timesteps=512, eval={"enabled": False}, seed=1), run_root=tmp_path / "a",
                 progress=False)   # another seed than the runs below: other initial weights
    start = load_checkpoint(base.final_dir)
    cfg = _config("maskable_ppo", n_timesteps=512, init_from=str(base.final_dir), checkpoint_every=256,
                  learning_rate=1e-12, eval={"enabled": False})
    result = train(cfg, run_root=tmp_path / "b", progress=False)
    assert sorted(p.name for p in (result.run_dir / "checkpoints").iterdir()) == ["final", "step_256", "step_512"]
    assert result.report["init_from"]["path"] == str(base.final_dir)
    # a learning rate of ~0 keeps the loaded weights: the policy acts as the starting checkpoint did
    tuned = load_checkpoint(result.final_dir)
    obs, masks = _obs_and_masks()
    assert [tuned.act(o, m) for o, m in zip(obs, masks)] == [start.act(o, m) for o, m in zip(obs, masks)]
    for pa, pb in zip(start.model.policy.parameters(), tuned.model.policy.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=0)
    fresh = load_checkpoint(train(_config("maskable_ppo", n_timesteps=512, learning_rate=1e-12,
                                          eval={"enabled": False}), run_root=tmp_path / "c", progress=False).final_dir)
    assert any(not torch.allclose(pa, pb) for pa, pb in zip(start.model.policy.parameters(),
                                                            fresh.model.policy.parameters()))


def test_init_from_refuses_what_cannot_carry_over(tmp_path):
    with pytest.raises(ValueError, match="init_from: .*nope: not a checkpoint directory"):
        train(_config("maskable_ppo", init_from=str(tmp_path / "nope")), run_root=tmp_path, progress=False)
    base = train(_config("ppo", n_timesteps=256, eval={"enabled": False}), run_root=tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="a ppo checkpoint cannot start a maskable_ppo run"):
        train(_config("maskable_ppo", init_from=str(base.final_dir)), run_root=tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="networks do not fit this config's policy"):
        train(_config("ppo", init_from=str(base.final_dir), policy_kwargs={"net_arch": [8]}), run_root=tmp_path / "c",
              progress=False)
    with pytest.raises(ValueError, match="normalize: False"):
        train(_config("ppo", init_from=str(base.final_dir), normalize=True), run_root=tmp_path / "d", progress=False)


def test_init_from_with_imitation_continues_dagger_from_the_checkpoint(tmp_path):
    """With ``pretrain.enabled`` the DAgger student is the starting checkpoint: at a learning rate
    of ~0 the rounds leave its weights as they were (a fresh network's are other)."""
    start = train(_config("maskable_ppo", n_timesteps=256, eval={"enabled": False}, seed=1),
                  run_root=tmp_path / "a", progress=False)
    cont = dict(teacher_steps=50, dagger_rounds=1, dagger_steps=100, dagger_beta=0.0, epochs=1, learning_rate=1e-12,
                value_pretrain=False, rl_after=False)
    warm = train(_config("maskable_ppo", n_timesteps=0, eval={"enabled": False}, init_from=str(start.final_dir),
                         pretrain=cont), run_root=tmp_path / "b", progress=False)
    assert warm.report["pretrain"]["rounds"][1]["beta"] == 0.0   # the student acted, on its own states
    cold = train(_config("maskable_ppo", n_timesteps=0, eval={"enabled": False}, pretrain=cont),
                 run_root=tmp_path / "c", progress=False)
    a, b, c = (load_checkpoint(r.final_dir).model.policy for r in (start, warm, cold))
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=0)
    assert any(not torch.allclose(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))
