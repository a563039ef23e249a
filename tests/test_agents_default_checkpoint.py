"""The shipped checkpoint (agents/checkpoints/default) loads, fits its cluster and acts."""

from __future__ import annotations

import gymnasium as gym

import envs  # noqa: F401
from agents import DEFAULT_CHECKPOINT, load_controller
from agents.checkpoint import read_metadata
from arrow_rl.cluster.base import Flip


def test_default_checkpoint_is_small_and_described():
    size = sum(p.stat().st_size for p in DEFAULT_CHECKPOINT.iterdir())
    assert size < 1_000_000
    meta = read_metadata(DEFAULT_CHECKPOINT)
    assert meta["algo"] == "maskable_ppo"
    assert len(meta["observation_features"]) == meta["observation_space"]["shape"][0]
    assert meta["holdout"][0]["trace"] == "azure-code" and meta["train_config"]["holdout"]["fraction"] > 0


def test_default_checkpoint_controls_its_cluster():
    meta = read_metadata(DEFAULT_CHECKPOINT)
    env_cfg = dict(meta["env_config"])
    env_cfg["episode"] = {**env_cfg["episode"], "duration_s": 10.0, "drain_s": 5.0}
    env = gym.make("arrow_rl/PDCluster-v0", **env_cfg)
    env.reset(seed=0)
    controller = load_controller(DEFAULT_CHECKPOINT)
    controller.reset(env.unwrapped.cluster.info)
    for _ in range(5):
        flips = controller.act(env.unwrapped.control_state)
        assert all(isinstance(f, Flip) for f in flips)
        env.step(0)
