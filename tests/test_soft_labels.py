"""Soft labels from the lookahead teacher's candidate scores (issue 12: better teachers than Arrow).

The oracle-moves teacher scores every candidate; a hard argmax turns candidates that only the
future separates into "right" and "wrong". These tests pin what the env exposes, what imitation
stores, and the target distribution the clone is fitted to."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.config import PretrainConfig
from agents.imitation import Dataset, cloning_targets, collect, fit_bc
from agents.inference import policy_logits
from agents.toy import TOY_ENV_ID, register_toy_env
from envs import PDClusterEnv

torch.set_num_threads(1)
register_toy_env()

SMALL = {"action": {"kind": "moves"}, "observation": {"kind": "pools"}, "preset": "h100-llama3.1-70b-tp4",
         "slo_ttft_s": 10.0, "slo_tpot_s": 0.125, "num_instances": 6, "initial_prefill": 1,
         "teacher": "oracle-moves", "teacher_config": {"candidate_fractions": [0.25], "lookahead_s": 10.0},
         "episode": {"traces": ["azure-code"], "duration_s": 12, "drain_s": 2, "rate_scale": [10.0, 10.0]}}


def test_weight_zero_is_the_hard_label_with_smoothing_over_valid_actions():
    masks = np.array([[True, True, False, True], [True, False, False, False]])
    scores = np.array([[1.0, 5.0, np.nan, 2.0], [0.0, np.nan, np.nan, np.nan]], np.float32)
    t = cloning_targets(np.array([1, 0]), masks, scores, label_smoothing=0.1, soft_weight=0.0)
    np.testing.assert_allclose(t[0], [0.05, 0.9, 0.0, 0.05], atol=1e-6)
    np.testing.assert_allclose(t[1], [1.0, 0.0, 0.0, 0.0])   # nothing else valid: nothing to smooth over


def test_soft_part_is_a_softmax_of_the_scores_over_tried_valid_actions():
    masks = np.array([[True, True, True, False]])
    scores = np.array([[300.0, 297.0, np.nan, 900.0]], np.float32)   # action 2 untried, action 3 masked
    t = cloning_targets(np.array([0]), masks, scores, soft_weight=1.0, temperature=0.01)   # tau = 3 requests
    e = np.exp([0.0, -1.0])
    np.testing.assert_allclose(t[0], [e[0] / e.sum(), e[1] / e.sum(), 0.0, 0.0], atol=1e-6)


def test_the_temperature_scales_with_the_traffic():
    masks = np.ones((2, 2), bool)
    scores = np.array([[60.0, 55.0], [2000.0, 1995.0]], np.float32)   # the same 5-request gap
    t = cloning_targets(np.array([0, 0]), masks, scores, soft_weight=1.0, temperature=0.02)
    assert t[0, 1] < 0.02           # decisive at 60 requests
    assert t[1, 1] > 0.4            # a near-tie at 2,000


def test_all_tied_candidates_keep_the_teachers_tie_break_on_top():
    masks = np.ones((1, 5), bool)
    scores = np.full((1, 5), 7.0, np.float32)
    t = cloning_targets(np.array([0]), masks, scores, soft_weight=0.5)
    assert t[0].argmax() == 0
    np.testing.assert_allclose(t[0], [0.6, 0.1, 0.1, 0.1, 0.1], atol=1e-6)
    assert t.sum() == pytest.approx(1.0)


def test_rows_without_scores_keep_the_hard_label():
    masks = np.ones((2, 3), bool)
    scores = np.array([[np.nan] * 3, [0.0, 0.0, 0.0]], np.float32)
    t = cloning_targets(np.array([2, 2]), masks, scores, soft_weight=0.8)
    np.testing.assert_allclose(t[0], [0.0, 0.0, 1.0])
    assert t[1, 2] < 1.0


def test_the_oracle_reports_the_score_of_every_candidate_on_decision_steps():
    env = PDClusterEnv(SMALL)
    _obs, info = env.reset(seed=0)
    scores = info["teacher_scores"]
    tried = np.isfinite(scores)
    assert tried[0] and tried.sum() > 1
    assert scores[info["teacher_action"]] == np.nanmax(scores)   # the label is a best-scoring candidate
    assert all(info["action_mask"][a] for a in np.flatnonzero(tried))
    _obs, _r, _term, _trunc, info = env.step(0)   # 1 s later: between the oracle's 5 s decisions
    assert "teacher_scores" not in info and info["teacher_action"] == 0


def test_collect_stores_the_scores_and_the_dataset_keeps_them(tmp_path):
    data = collect([PDClusterEnv(SMALL)], 6, lambda o, m, t: t, np.random.default_rng(0), beta=1.0, seed=0).dataset
    scored = np.isfinite(data.scores).any(axis=1)
    assert scored.any() and not scored.all()   # decision steps scored, the no-ops between them not
    rows = np.flatnonzero(scored)
    assert np.isfinite(data.scores[rows, data.actions[rows]]).all()
    data.save(tmp_path / "d.npz")
    back = Dataset.load(tmp_path / "d.npz")
    np.testing.assert_array_equal(back.scores, data.scores)


def test_a_dataset_saved_before_scores_existed_loads_with_none(tmp_path):
    np.savez_compressed(tmp_path / "old.npz", obs=np.zeros((2, 3), np.float32), actions=np.zeros(2, np.int64),
                        masks=np.ones((2, 4), bool))
    back = Dataset.load(tmp_path / "old.npz")
    assert back.scores.shape == (2, 4) and np.isnan(back.scores).all()


def _fitted_probs(soft_weight: float) -> np.ndarray:
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    model = MaskablePPO("MlpPolicy", DummyVecEnv([lambda: gym.make(TOY_ENV_ID)]), seed=0,
                        policy_kwargs={"net_arch": [32]}, n_steps=64)
    obs_dim = int(np.prod(model.observation_space.shape))
    n_actions = int(model.action_space.n)
    obs = np.random.default_rng(0).normal(size=(256, obs_dim)).astype(np.float32)
    masks = np.ones((256, n_actions), bool)
    scores = np.full((256, n_actions), np.nan, np.float32)
    scores[:, :2] = 10.0          # actions 0 and 1 are equally good; the teacher's tie-break says 0
    data = Dataset(obs, np.zeros(256, np.int64), masks, scores)
    fit_bc(model.policy, data, PretrainConfig(epochs=150, learning_rate=1e-2, class_balance=0.0,
                                                soft_label_weight=soft_weight), seed=0)
    with torch.no_grad():
        return torch.softmax(policy_logits(model.policy, torch.as_tensor(obs)), -1).mean(0).numpy()


def test_soft_labels_teach_a_near_tie_as_one():
    hard, soft = _fitted_probs(0.0), _fitted_probs(0.5)
    assert hard[1] < 0.05                      # hard labels: the other best candidate is "wrong"
    assert soft[1] == pytest.approx(0.25, abs=0.03)   # soft 0.5: half of the tie shared, as the target says
    assert soft[0] > soft[1]


def test_hard_labels_are_bit_identical_to_the_torch_recipe_the_shipped_checkpoint_used():
    # the pre-soft-label cloning target, computed in torch float32 inside fit_bc: a retrain of the
    # shipped checkpoint must not move by an ulp
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    masks = rng.random((500, 19)) < 0.6
    actions = rng.integers(0, 19, 500)
    masks[np.arange(500), actions] = True
    ours = cloning_targets(actions, masks, np.full((500, 19), np.nan, np.float32), label_smoothing=0.1)
    m, target = torch.as_tensor(masks), F.one_hot(torch.as_tensor(actions), 19).float()
    others = m.float() * (1.0 - target)
    n_others = others.sum(-1, keepdim=True)
    smooth = torch.where(n_others > 0, others / n_others.clamp(min=1.0), torch.zeros_like(others))
    eps = torch.where(n_others > 0, torch.full_like(n_others, 0.1), torch.zeros_like(n_others))
    np.testing.assert_array_equal(ours, ((1.0 - eps) * target + eps * smooth).numpy())


def test_the_oracle_scores_and_labels_each_distinct_move_once():
    """On 4 instances the three fractions are one move per pair: the teacher tries it once, under
    the one action the mask leaves, so neither its label nor its soft label names a masked twin."""
    env = PDClusterEnv({**SMALL, "num_instances": 4, "teacher_config": {"lookahead_s": 5.0}})
    _obs, info = env.reset(seed=0)
    tried = np.flatnonzero(np.isfinite(info["teacher_scores"]))
    assert tried.size > 1 and all(info["action_mask"][a] for a in tried)
    assert info["action_mask"][info["teacher_action"]]
    codec = env.codec
    assert all(codec.canonical(int(a)) == a for a in tried)
    assert not info["action_mask"][2] and not info["action_mask"][3]   # P->D at 1/8 and 1/4 = P->D at 1/16
