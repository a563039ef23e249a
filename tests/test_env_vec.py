"""Vectorisation: SB3 SubprocVecEnv and gymnasium AsyncVectorEnv (2 workers, small episodes), with
action masks reachable inside the workers and through gymnasium wrappers."""

from __future__ import annotations

import gymnasium
import numpy as np

import envs  # noqa: F401  (registers the ids)

KW = dict(num_instances=4, episode={"traces": ["azure-conv"], "duration_s": 6.0, "drain_s": 2.0,
                                    "rate_scale": (1.0, 1.0)})


def make():
    return gymnasium.make("arrow_rl/PDCluster-v0", **KW)


def test_action_masks_reach_through_gymnasium_wrappers():
    env = make()
    env.reset(seed=0)
    assert type(env).__name__ != "PDClusterEnv"  # wrapped by make()
    mask = env.get_wrapper_attr("action_masks")()
    assert mask.dtype == bool and mask.shape == (env.action_space.n,) and mask[0]


def test_sb3_subproc_vec_env_masks_in_the_workers_and_maskable_ppo():
    """One SubprocVecEnv (worker start-up dominates the cost): masks come back from the workers,
    episodes auto-reset, and MaskablePPO trains on it."""
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.utils import get_action_masks
    from stable_baselines3.common.vec_env import SubprocVecEnv

    venv = SubprocVecEnv([make, make])
    try:
        venv.seed(0)
        obs = venv.reset()
        assert obs.shape == (2, *venv.observation_space.shape)
        ends = 0
        for _ in range(12):
            masks = get_action_masks(venv)
            assert masks.shape == (2, venv.action_space.n) and masks[:, 0].all()  # no-op always valid
            actions = np.array([np.flatnonzero(m)[-1] for m in masks])
            obs, rewards, dones, infos = venv.step(actions)
            ends += int(dones.sum())
            assert all("teacher_action" in i for i in infos)
        assert ends >= 2  # both workers finished an episode and auto-reset
        model = MaskablePPO("MlpPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
        model.learn(total_timesteps=32)
    finally:
        venv.close()


def test_gymnasium_async_vector_env():
    venv = gymnasium.vector.AsyncVectorEnv([make, make])
    try:
        obs, infos = venv.reset(seed=[1, 2])
        assert obs.shape == (2, *venv.single_observation_space.shape)
        for _ in range(10):
            masks = np.stack(venv.call("action_masks"))
            actions = np.array([np.flatnonzero(m)[0] for m in masks])
            obs, rewards, term, trunc, infos = venv.step(actions)
            assert np.all(np.isfinite(rewards)) and not (term & trunc).any()  # one or the other (PDClusterEnv docstring)
    finally:
        venv.close()
