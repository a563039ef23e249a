"""PDClusterEnv on the emulator against the Gymnasium and SB3 API checkers, registration, seeding, render."""

from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium
import numpy as np
import pytest

import envs
from envs import PDClusterEnv

SMALL = dict(num_instances=4, episode={"traces": ["azure-conv"], "duration_s": 15.0, "drain_s": 10.0})


def small_env(**kw):
    cfg = {**SMALL, **kw}
    return PDClusterEnv(cfg)


def test_gymnasium_check_env_passes():
    from gymnasium.utils.env_checker import check_env

    env = small_env()
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=UserWarning)  # the checker reports problems as warnings
        check_env(env, skip_render_check=True)


def test_gymnasium_check_env_passes_for_the_dict_space_and_target_actions():
    from gymnasium.utils.env_checker import check_env

    env = small_env(observation={"per_instance": True, "max_instances": 6}, action={"kind": "target"})
    check_env(env, skip_render_check=True)


def test_sb3_check_env_passes():
    from stable_baselines3.common.env_checker import check_env

    check_env(small_env(), warn=True)


def test_make_works_without_importing_the_package_first():
    code = ("import gymnasium; e = gymnasium.make('envs:arrow_rl/PDCluster-v0', num_instances=4, "
            "episode={'duration_s': 5.0, 'drain_s': 2.0}); o, i = e.reset(seed=0); "
            "print(e.observation_space.contains(o), type(e.unwrapped).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "PDClusterEnv"]


@pytest.mark.parametrize("env_id", sorted(envs.VARIANTS))
def test_registered_variants_reset_and_step(env_id):
    env = gymnasium.make(env_id, num_instances=4, episode={"duration_s": 5.0, "drain_s": 2.0})
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    obs, r, term, trunc, info = env.step(0)
    assert np.isfinite(r) and not term


def rollout(env, seed, actions):
    obs, info = env.reset(seed=seed)
    out = [obs.copy()]
    rewards = []
    for a in actions:
        if not env.action_masks()[a]:
            a = 0
        obs, r, term, trunc, info = env.step(a)
        out.append(obs.copy())
        rewards.append(r)
        if term or trunc:
            break
    return np.stack(out), np.array(rewards), info


def test_same_seed_gives_the_same_episode():
    actions = [0, 1, 0, 3, 0, 0, 2, 4] * 3
    o1, r1, i1 = rollout(small_env(episode={"rate_scale": (0.5, 2.0), "duration_s": 15.0}), 7, actions)
    o2, r2, i2 = rollout(small_env(episode={"rate_scale": (0.5, 2.0), "duration_s": 15.0}), 7, actions)
    assert np.array_equal(o1, o2) and np.array_equal(r1, r2)


def test_different_seeds_draw_different_windows():
    env = small_env(episode={"rate_scale": (0.5, 2.0), "duration_s": 15.0})
    _, a = env.reset(seed=1)
    _, b = env.reset(seed=2)
    assert (a["episode_desc"]["start_s"], a["episode_desc"]["rate_scale"]) != \
           (b["episode_desc"]["start_s"], b["episode_desc"]["rate_scale"])


def test_reset_options_pin_the_window():
    env = small_env()
    _, info = env.reset(seed=3, options={"start_s": 100.0, "rate_scale": 1.5})
    assert info["episode_desc"]["start_s"] == 100.0 and info["episode_desc"]["rate_scale"] == 1.5


def test_render_draws_an_rgb_timeline():
    env = PDClusterEnv({**SMALL}, render_mode="rgb_array")
    env.reset(seed=0)
    for a in (1, 0, 3, 0):
        env.step(a)
    img = env.render()
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
    assert img.std() > 0  # something was drawn


def test_one_env_spans_several_cluster_sizes_with_fixed_spaces():
    env = small_env(episode={"traces": ["azure-conv"], "duration_s": 5.0, "drain_s": 2.0, "num_instances": [4, 6]})
    seen = set()
    for seed in range(6):
        obs, info = env.reset(seed=seed)
        assert env.observation_space.contains(obs)
        n = info["episode_desc"]["num_instances"]
        seen.add(n)
        assert len(env.cluster.instances()) == n
        assert info["num_prefill"] == n // 2
        env.step(int(np.flatnonzero(env.action_masks())[-1]))
    assert seen == {4, 6}
    _, info = env.reset(seed=0, options={"num_instances": 6})
    assert info["episode_desc"]["num_instances"] == 6


def test_unknown_reset_option_is_named():
    with pytest.raises(ValueError, match="rate_scal"):
        small_env().reset(seed=0, options={"rate_scal": 2.0})


def test_check_env_passes_with_varying_sizes_dict_space_and_target_actions():
    from gymnasium.utils.env_checker import check_env

    env = small_env(episode={"traces": ["azure-conv"], "duration_s": 5.0, "drain_s": 2.0, "num_instances": [4, 6]},
                    observation={"per_instance": True}, action={"kind": "target"})
    assert env.action_space.n == 7 and env.observation_space["instances"].shape[0] == 6
    check_env(env, skip_render_check=True)
    _, info = env.reset(seed=0, options={"num_instances": 4})
    assert not env.action_masks()[4:].any()  # a 4-instance cluster cannot have 4+ prefill instances


def test_make_encoders_reproduces_the_env_observation():
    """A deployed controller that builds its encoders with make_encoders sees what the env's agent saw."""
    from envs import make_encoders

    env = small_env(episode={"traces": ["azure-conv"], "duration_s": 5.0, "drain_s": 2.0, "num_instances": [4, 6]})
    obs, info = env.reset(seed=3)
    builder, codec = make_encoders(env.config, info["episode_desc"]["num_instances"])
    assert builder.observation_space == env.observation_space and codec.space == env.action_space
    assert np.array_equal(builder.build(env.control_state), obs)
