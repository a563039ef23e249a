"""Mask-aware behaviour cloning and DAgger, on a toy env with a synthetic teacher."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.config import PretrainConfig
from agents.imitation import (
    Dataset,
    TeacherMissingError,
    agreement,
    class_weights,
    collect,
    discounted_returns,
    fit_bc,
    pretrain,
)
from agents.inference import greedy_actions, masked_argmax
from agents.toy import TOY_ENV_ID, register_toy_env

torch.set_num_threads(1)
register_toy_env()


def _model(seed: int = 0):
    from sb3_contrib import MaskablePPO

    venv = DummyVecEnv([lambda: gym.make(TOY_ENV_ID)])
    return MaskablePPO("MlpPolicy", venv, seed=seed, policy_kwargs={"net_arch": [64, 64]}, n_steps=64)


def _teacher_data(n: int, seed: int) -> Dataset:
    envs = [gym.make(TOY_ENV_ID) for _ in range(4)]
    return collect(envs, n, lambda o, m, t: t, np.random.default_rng(seed), beta=1.0, seed=seed).dataset


@pytest.fixture(scope="module")
def fixed_dataset() -> tuple[Dataset, Dataset]:
    return _teacher_data(4000, 0), _teacher_data(2000, 100)


def test_bc_reaches_high_agreement_with_its_teacher(fixed_dataset):
    train, held_out = fixed_dataset
    model = _model()
    before = agreement(model, held_out)["flip_recall"]
    fit_bc(model.policy, train, PretrainConfig(epochs=20, learning_rate=3e-3, batch_size=128))
    after = agreement(model, held_out)
    assert after["accuracy"] >= 0.95
    assert after["flip_recall"] >= 0.9 > before


def test_bc_is_reproducible_for_a_seed(fixed_dataset):
    train, held_out = fixed_dataset
    cfg = PretrainConfig(epochs=2, learning_rate=3e-3, batch_size=128)
    preds = []
    for _ in range(2):
        model = _model(seed=3)
        fit_bc(model.policy, train, cfg, seed=5)
        preds.append(greedy_actions(model, held_out.obs, held_out.masks))
    np.testing.assert_array_equal(preds[0], preds[1])


def test_masked_argmax_never_picks_an_invalid_action():
    scores = np.array([[0.0, 5.0, 1.0], [9.0, 0.0, 3.0]])
    masks = np.array([[True, False, True], [False, True, True]])
    np.testing.assert_array_equal(masked_argmax(scores, masks), [2, 2])


def test_masked_argmax_with_no_valid_action_falls_back_to_noop():
    assert masked_argmax(np.array([[1.0, 2.0]]), np.array([[False, False]]))[0] == 0


def test_masked_argmax_rejects_a_mask_of_the_wrong_size():
    with pytest.raises(ValueError, match="mask shape"):
        masked_argmax(np.zeros((1, 3)), np.ones((1, 4), bool))


def test_class_weights_upweight_rare_teacher_actions():
    actions = np.array([0] * 90 + [1] * 10)
    w = class_weights(actions, 3, power=1.0)
    assert w[1] == pytest.approx(9 * w[0])
    assert (w[actions]).mean() == pytest.approx(1.0)
    np.testing.assert_allclose(class_weights(actions, 3, power=0.0)[:2], [1.0, 1.0])


def test_discounted_returns_reset_at_episode_ends():
    rewards = np.ones((4, 1), np.float32)
    dones = np.array([[False], [True], [False], [True]])
    ret, valid = discounted_returns(rewards, dones, gamma=0.5)
    np.testing.assert_allclose(ret[:, 0], [1.5, 1.0, 1.5, 1.0])
    assert valid.all()


def test_discounted_returns_drop_the_truncated_tail():
    ret, valid = discounted_returns(np.ones((10, 1), np.float32), np.zeros((10, 1), bool), gamma=0.5)
    assert not valid[-1, 0] and valid[0, 0]


def test_collect_labels_every_state_with_the_teacher_even_when_the_student_acts():
    envs = [gym.make(TOY_ENV_ID) for _ in range(2)]
    roll = collect(envs, 200, lambda o, m, t: np.zeros(len(o), np.int64), np.random.default_rng(0), beta=0.0, seed=0)
    assert roll.teacher_share == 0.0
    from agents.toy import TeacherToyEnv

    expected = [TeacherToyEnv.teacher_from_obs(o, 8) for o in roll.dataset.obs]
    np.testing.assert_array_equal(roll.dataset.actions, expected)
    assert roll.dataset.masks[np.arange(len(roll.dataset)), roll.dataset.actions].all()


def test_collect_without_teacher_in_info_is_a_clear_error():
    with pytest.raises(TeacherMissingError, match="teacher_action"):
        collect([gym.make("CartPole-v1")], 10, lambda o, m, t: t, np.random.default_rng(0), beta=1.0, seed=0)


def test_dagger_improves_agreement_on_the_students_own_states():
    model = _model()
    envs = [gym.make(TOY_ENV_ID) for _ in range(2)]
    cfg = PretrainConfig(teacher_steps=1500, dagger_rounds=2, dagger_steps=1000, epochs=8, learning_rate=3e-3,
                         batch_size=128, value_pretrain=True)
    report, data = pretrain(model, envs, cfg, seed=0)
    assert len(data) == 1500 + 2 * 1000
    first, last = report.rounds[1]["on_policy_before_fit"], report.rounds[-1]["train"]
    assert last["accuracy"] > first["accuracy"]
    assert np.isfinite(report.value_mse)


def test_dataset_round_trips_through_npz(tmp_path, fixed_dataset):
    data = fixed_dataset[1]
    data.save(tmp_path / "d.npz")
    back = Dataset.load(tmp_path / "d.npz")
    np.testing.assert_array_equal(back.obs, data.obs)
    np.testing.assert_array_equal(back.actions, data.actions)
    np.testing.assert_array_equal(back.masks, data.masks)


def test_entropy_bonus_keeps_the_clone_stochastic_without_losing_agreement(fixed_dataset):
    train, held_out = fixed_dataset
    out = {}
    for coef in (0.0, 0.1):
        model = _model()
        fit_bc(model.policy, train, PretrainConfig(epochs=20, learning_rate=3e-3, batch_size=128, entropy_coef=coef))
        out[coef] = agreement(model, held_out)
    assert out[0.1]["entropy"] > out[0.0]["entropy"]
    assert out[0.1]["teacher_prob"] < out[0.0]["teacher_prob"]
    assert out[0.1]["accuracy"] >= 0.93


def test_label_smoothing_caps_the_clones_confidence_on_valid_actions(fixed_dataset):
    train, held_out = fixed_dataset
    model = _model()
    fit_bc(model.policy, train, PretrainConfig(epochs=20, learning_rate=3e-3, batch_size=128, label_smoothing=0.1))
    m = agreement(model, held_out)
    assert m["accuracy"] >= 0.93
    assert 0.8 < m["teacher_prob"] < 0.97


@pytest.mark.parametrize("vec", ["dummy", "subproc", "independent"])
def test_collect_on_a_vecenv_gives_the_samples_of_the_plain_path(vec):
    """Parallel labelling (an SB3 VecEnv in lock-step, or EnvWorkers stepping each env on its own)
    must not change what is learned: the same seed gives the same observations, labels, masks,
    rewards and episode ends as plain envs stepped in turn, including the label of each new
    episode's first state (from the worker's reset info)."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    from agents.label_workers import EnvWorkers
    from agents.toy import TeacherToyEnv

    student = lambda o, m, t: (t + 1) % m.shape[1]   # noqa: E731 - disagrees with the teacher (one row or many)
    plain = collect([TeacherToyEnv() for _ in range(2)], 200, student, np.random.default_rng(3), beta=0.5, seed=7)
    cls = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv, "independent": EnvWorkers}[vec]
    venv = cls([lambda: TeacherToyEnv() for _ in range(2)])   # a worker process imports agents.toy
    try:
        par = collect(venv, 200, student, np.random.default_rng(3), beta=0.5, seed=7)
    finally:
        venv.close()
    assert plain.dones.any()   # episodes ended inside the window
    np.testing.assert_array_equal(par.obs, plain.obs)
    np.testing.assert_array_equal(par.rewards, plain.rewards)
    np.testing.assert_array_equal(par.dones, plain.dones)
    np.testing.assert_array_equal(par.dataset.actions, plain.dataset.actions)
    np.testing.assert_array_equal(par.dataset.masks, plain.dataset.masks)
    assert len(par.episode_infos) == len(plain.episode_infos)


def test_an_env_that_fails_in_its_worker_names_itself():
    from agents.label_workers import EnvWorkerError, EnvWorkers
    from agents.toy import TeacherToyEnv

    class Broken(TeacherToyEnv):
        def step(self, action):
            raise ValueError("emulator exploded")

    workers = EnvWorkers([lambda: TeacherToyEnv(), lambda: Broken()])
    try:
        with pytest.raises(EnvWorkerError, match=r"labelling env 1 failed(.|\n)*emulator exploded"):
            collect(workers, 20, lambda o, m, t: t, np.random.default_rng(0), beta=1.0, seed=0)
    finally:
        workers.close()
