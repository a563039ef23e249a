"""Deterministic, mask-aware action selection for SB3 models.

One function picks actions everywhere a trained policy acts deterministically: evaluation during
training, DAgger rollouts, and the deployed ``CheckpointController``. Using the raw network
outputs (logits for PPO/MaskablePPO, Q-values for DQN) and masking invalid actions ourselves gives
the same choice for all three algorithms, and avoids ``predict``'s per-call overhead (a direct
forward pass of a small MLP is tens of microseconds).
"""

from __future__ import annotations

import numpy as np
import torch

_NEG = -1e9


def action_scores(model, obs: np.ndarray) -> np.ndarray:
    """Per-action scores of a batch of (already normalized) observations, shape (B, n_actions).

    PPO/MaskablePPO: the categorical logits; DQN: the Q-values. Higher is preferred either way.
    """
    policy = model.policy
    obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=policy.device)
    if obs_t.ndim == 1:
        obs_t = obs_t[None]
    with torch.no_grad():
        if hasattr(policy, "q_net"):  # DQN
            return policy.q_net(obs_t).cpu().numpy()
        return policy_logits(policy, obs_t).cpu().numpy()


def policy_logits(policy, obs_t: torch.Tensor) -> torch.Tensor:
    """Categorical logits of an actor-critic policy (differentiable; used by behaviour cloning)."""
    features = policy.extract_features(obs_t, policy.pi_features_extractor)
    latent_pi = policy.mlp_extractor.forward_actor(features)
    return policy.action_net(latent_pi)


def masked_argmax(scores: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
    """Argmax over valid actions; rows with no valid action fall back to action 0 (no-op)."""
    scores = np.atleast_2d(scores)
    if masks is None:
        return scores.argmax(axis=1)
    masks = np.atleast_2d(np.asarray(masks, dtype=bool))
    if masks.shape != scores.shape:
        raise ValueError(f"action mask shape {masks.shape} does not match the policy's scores {scores.shape}")
    out = np.where(masks, scores, _NEG).argmax(axis=1)
    out[~masks.any(axis=1)] = 0
    return out


def greedy_actions(model, obs: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
    """Deterministic masked actions for a batch of normalized observations."""
    return masked_argmax(action_scores(model, obs), masks)


def hold_unless_confident(scores: np.ndarray, mask: np.ndarray | None, noop: int, margin: float) -> int:
    """The masked-greedy action of one row of ``scores``, unless it is a move that beats the no-op
    by less than ``margin``: then the no-op.

    Why: a role flip drains an instance, so a move the policy only narrowly prefers costs more than
    it gains. For PPO/MaskablePPO the scores are logits, so ``margin`` is a log-odds threshold (move
    only when P(move) >= e^margin x P(no-op)); for DQN it is a Q-value gap. ``margin`` 0 is plain
    ``masked_argmax``. A masked no-op (it cannot happen with the shipped codecs) leaves the choice as is.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    best = int(masked_argmax(scores[None], None if mask is None else np.asarray(mask)[None])[0])
    if margin <= 0 or best == noop or (mask is not None and not bool(np.asarray(mask).reshape(-1)[noop])):
        return best
    return best if scores[best] - scores[noop] >= margin else int(noop)
