"""Arrow as teacher: behaviour cloning and DAgger for SB3 actor-critic policies, written here.

(The ``imitation`` library pins SB3 2.2 / gymnasium 0.29 and does not install beside this stack.)

The environment exposes, in ``info["teacher_action"]``, the action the Arrow interval controller
would take in the current state, in the env's action encoding; the teacher sees only what a
deployed controller sees. From that:

1. **Behaviour cloning**: roll out the teacher, record (observation, teacher action, action mask),
   minimise the mask-aware cross-entropy of the policy's categorical distribution (invalid actions
   get -inf logits, exactly as MaskablePPO samples). Arrow mostly does nothing, so the loss can be
   class-weighted (``class_balance``) so rare flips are not drowned by no-ops. States with a single
   valid action (between decisions, ``action.decision_every``) are not recorded: nothing to learn.
   A teacher that scores its candidates (the lookahead oracle, ``info["teacher_scores"]``) can also
   give soft labels (``soft_label_weight``): part of the target is a softmax of its scores, so two
   candidates that only the future separates are taught as near-equal, not as right and wrong
   (distillation, Hinton et al., 2015).
2. **DAgger** (Ross et al., 2011): roll out a mixture (teacher with probability beta_i, else the
   student's greedy masked action), label every visited state with the teacher's action, aggregate
   and refit. This fixes the compounding-error problem of plain cloning: the student learns what
   Arrow would do in the states the *student* reaches.
3. **Value warm start**: fit the value head to discounted Monte-Carlo returns of the clone's own
   rollouts, so RL fine-tuning starts from a critic that matches the policy instead of tearing the
   cloned policy apart with random advantages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from agents.config import PretrainConfig
from agents.inference import action_scores, greedy_actions, masked_argmax, policy_logits
from agents.label_workers import EnvWorkers, env_masks

Normalizer = Callable[[np.ndarray], np.ndarray]


class TeacherMissingError(RuntimeError):
    """The environment's ``info`` has no ``teacher_action``."""


def _identity(obs: np.ndarray) -> np.ndarray:
    return obs


def teacher_scores(info: dict[str, Any], n_actions: int) -> np.ndarray:
    """The teacher's score per action (NaN where it gave none; all NaN for a teacher without scores)."""
    scores = info.get("teacher_scores")
    if scores is None:
        return np.full(n_actions, np.nan, np.float32)
    return np.asarray(scores, np.float32).reshape(n_actions)


def teacher_action(info: dict[str, Any]) -> int:
    try:
        return int(info["teacher_action"])
    except KeyError:
        raise TeacherMissingError(
            "env info has no 'teacher_action'; imitation needs an env that runs the teacher "
            f"(PDClusterEnv does). info keys: {sorted(info)}"
        ) from None


@dataclass
class Dataset:
    """Aggregated (observation, teacher action, mask, teacher scores) samples; raw (un-normalized)
    observations. ``scores`` is NaN where the teacher gave no score (every Arrow label)."""

    obs: np.ndarray
    actions: np.ndarray
    masks: np.ndarray
    scores: np.ndarray | None = None
    max_size: int = 500_000

    def __post_init__(self) -> None:
        if self.scores is None:
            self.scores = np.full(self.masks.shape, np.nan, np.float32)

    @classmethod
    def empty(cls, obs_dim: int, n_actions: int, max_size: int = 500_000) -> "Dataset":
        return cls(np.zeros((0, obs_dim), np.float32), np.zeros(0, np.int64), np.zeros((0, n_actions), bool),
                   np.zeros((0, n_actions), np.float32), max_size)

    def __len__(self) -> int:
        return int(self.actions.size)

    def add(self, obs: np.ndarray, actions: np.ndarray, masks: np.ndarray, scores: np.ndarray | None = None) -> None:
        if scores is None:
            scores = np.full(masks.shape, np.nan, np.float32)
        self.obs = np.concatenate([self.obs, obs.astype(np.float32)])[-self.max_size :]
        self.actions = np.concatenate([self.actions, actions.astype(np.int64)])[-self.max_size :]
        self.masks = np.concatenate([self.masks, masks.astype(bool)])[-self.max_size :]
        self.scores = np.concatenate([self.scores, scores.astype(np.float32)])[-self.max_size :]

    def save(self, path) -> None:
        np.savez_compressed(path, obs=self.obs, actions=self.actions, masks=self.masks, scores=self.scores)

    @classmethod
    def load(cls, path) -> "Dataset":
        with np.load(path) as z:
            return cls(z["obs"], z["actions"], z["masks"], z["scores"] if "scores" in z.files else None)


@dataclass
class Rollout:
    """What one collection pass saw: the labelled samples plus rewards for the value warm start."""

    dataset: Dataset
    obs: np.ndarray            # (T, n_envs, obs_dim), raw
    rewards: np.ndarray        # (T, n_envs)
    dones: np.ndarray          # (T, n_envs): episode ended after this step
    teacher_share: float       # fraction of steps on which the teacher acted
    episode_infos: list[dict[str, Any]] = field(default_factory=list)


class _PlainEnvs:
    """Plain gym envs stepped one after another in this process (reset by hand at episode ends)."""

    def __init__(self, envs: Sequence[gym.Env]) -> None:
        self.envs = list(envs)
        self.num_envs = len(self.envs)
        self.observation_space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space

    def reset(self, seed: int) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
        pairs = [env.reset(seed=seed + i) for i, env in enumerate(self.envs)]
        return [o for o, _ in pairs], [info for _, info in pairs]

    def masks(self) -> np.ndarray:
        return np.stack([env_masks(env) for env in self.envs])

    def step(self, actions: np.ndarray) -> tuple[list, np.ndarray, np.ndarray, list[dict], list[dict]]:
        """(next observations, rewards, dones, step infos, infos of the next observations)."""
        obs, rewards, dones, infos, next_infos = [], np.zeros(self.num_envs), np.zeros(self.num_envs, bool), [], []
        for i, env in enumerate(self.envs):
            o, r, terminated, truncated, info = env.step(int(actions[i]))
            rewards[i], dones[i] = r, terminated or truncated
            infos.append(info)
            if dones[i]:
                o, info = env.reset()
            obs.append(o)
            next_infos.append(info)
        return obs, rewards, dones, infos, next_infos


class _VecEnvs:
    """An SB3 ``VecEnv`` (``SubprocVecEnv``: one env per process, stepped in parallel). Its workers
    reset an env when its episode ends and hand back the reset ``info`` in ``reset_infos``, which is
    where the label of the next episode's first state comes from."""

    def __init__(self, venv: Any) -> None:
        self.venv = venv
        self.num_envs = venv.num_envs
        self.observation_space = venv.observation_space
        self.action_space = venv.action_space

    def reset(self, seed: int) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
        self.venv.seed(seed)   # env i gets seed + i, as the plain path
        obs = self.venv.reset()
        return list(obs), list(self.venv.reset_infos)

    def masks(self) -> np.ndarray:
        return np.stack([np.asarray(m, dtype=bool) for m in self.venv.env_method("action_masks")])

    def step(self, actions: np.ndarray) -> tuple[list, np.ndarray, np.ndarray, list[dict], list[dict]]:
        obs, rewards, dones, infos = self.venv.step(np.asarray(actions))
        next_infos = [self.venv.reset_infos[i] if dones[i] else infos[i] for i in range(self.num_envs)]
        return list(obs), np.asarray(rewards), np.asarray(dones, bool), list(infos), next_infos


def lockstep(envs: Any) -> _PlainEnvs | _VecEnvs:
    """``collect``'s view of its envs: a list of gym envs, or an SB3 ``VecEnv`` for parallel labelling."""
    return _VecEnvs(envs) if hasattr(envs, "step_async") else _PlainEnvs(envs)


def collect(
    envs: Sequence[gym.Env] | Any,
    n_steps: int,
    act: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    rng: np.random.Generator,
    beta: float,
    seed: int,
    max_dataset: int = 500_000,
    progress: Callable[[int], None] | None = None,
) -> Rollout:
    """Step ``envs`` in lock-step for about ``n_steps`` transitions in total.

    At each step each env follows the teacher with probability ``beta`` and ``act(obs, masks,
    teacher)`` otherwise; every visited state is labelled with the teacher's action. ``envs`` is a
    list of plain gym envs (stepped in this process) or an SB3 ``VecEnv`` (a ``SubprocVecEnv`` labels
    in parallel: the lookahead teacher runs inside each env's step, so labelling scales with the
    processes). Both give the same samples for the same seed: the label of a new episode's first
    state comes from its reset ``info``.
    """
    if isinstance(envs, EnvWorkers):
        return _collect_independent(envs, n_steps, act, rng, beta, seed, max_dataset, progress)
    pool = lockstep(envs)
    n_envs = pool.num_envs
    horizon = max(1, -(-n_steps // n_envs))
    obs_dim = int(np.prod(pool.observation_space.shape))
    n_actions = int(pool.action_space.n)
    cur_obs = np.zeros((n_envs, obs_dim), np.float32)
    cur_teacher = np.zeros(n_envs, np.int64)
    cur_scores = np.zeros((n_envs, n_actions), np.float32)
    first_obs, first_infos = pool.reset(seed)
    for i in range(n_envs):
        cur_obs[i] = np.asarray(first_obs[i], np.float32).reshape(-1)
        cur_teacher[i] = teacher_action(first_infos[i])
        cur_scores[i] = teacher_scores(first_infos[i], n_actions)
    obs_log, act_log, mask_log, score_log, rew_log, done_log = _empty_logs(horizon, n_envs, obs_dim, n_actions)
    teacher_steps = 0
    episode_infos: list[dict[str, Any]] = []
    for t in range(horizon):
        masks = pool.masks()
        obs_log[t], act_log[t], mask_log[t], score_log[t] = cur_obs, cur_teacher, masks, cur_scores
        use_teacher = rng.random(n_envs) < beta
        teacher_steps += int(use_teacher.sum())
        actions = cur_teacher.copy()
        if not use_teacher.all():
            student = act(cur_obs, masks, cur_teacher)
            actions = np.where(use_teacher, cur_teacher, student)
        obs, rewards, dones, infos, next_infos = pool.step(actions)
        rew_log[t], done_log[t] = rewards, dones
        for i in range(n_envs):
            if dones[i]:
                episode_infos.append(infos[i])
            cur_obs[i] = np.asarray(obs[i], np.float32).reshape(-1)
            cur_teacher[i] = teacher_action(next_infos[i])
            cur_scores[i] = teacher_scores(next_infos[i], n_actions)
        if progress is not None:
            progress(n_envs)
    return _rollout(obs_log, act_log, mask_log, score_log, rew_log, done_log, teacher_steps, episode_infos, max_dataset)


def _empty_logs(horizon: int, n_envs: int, obs_dim: int, n_actions: int) -> tuple[np.ndarray, ...]:
    """Per (step, env) logs of a collection: observations, teacher actions, masks, teacher scores,
    rewards, episode ends."""
    return (np.zeros((horizon, n_envs, obs_dim), np.float32), np.zeros((horizon, n_envs), np.int64),
            np.zeros((horizon, n_envs, n_actions), bool), np.zeros((horizon, n_envs, n_actions), np.float32),
            np.zeros((horizon, n_envs), np.float32), np.zeros((horizon, n_envs), bool))


def _rollout(obs_log: np.ndarray, act_log: np.ndarray, mask_log: np.ndarray, score_log: np.ndarray,
             rew_log: np.ndarray, done_log: np.ndarray, teacher_steps: int, episode_infos: list[dict[str, Any]],
             max_dataset: int) -> Rollout:
    horizon, n_envs, obs_dim = obs_log.shape
    n_actions = mask_log.shape[-1]
    data = Dataset.empty(obs_dim, n_actions, max_dataset)
    flat_masks = mask_log.reshape(-1, n_actions)
    # a state with one valid action teaches nothing (between decisions with action.decision_every > 1,
    # or a cluster too small to flip): kept, those forced no-ops would swamp the teacher's real choices
    informative = flat_masks.sum(axis=1) > 1
    data.add(obs_log.reshape(-1, obs_dim)[informative], act_log.reshape(-1)[informative], flat_masks[informative],
             score_log.reshape(-1, n_actions)[informative])
    return Rollout(data, obs_log, rew_log, done_log, teacher_steps / (horizon * n_envs), episode_infos)


def _collect_independent(workers: EnvWorkers, n_steps: int, act: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
                         rng: np.random.Generator, beta: float, seed: int, max_dataset: int,
                         progress: Callable[[int], None] | None) -> Rollout:
    """``collect`` on ``EnvWorkers``: each env runs its ``horizon`` steps as fast as it goes.

    The lock-step loop draws ``rng.random(n_envs)`` once per step; drawing the whole
    ``(horizon, n_envs)`` table at once gives the same numbers, so env ``i`` at its step ``t`` makes
    the same teacher/student choice as there, and the student (fixed during a collection) acts on
    the same observation: the samples land in the same (t, i) cells, whatever order the envs
    finish in. The student acts on one observation at a time here."""
    n_envs = workers.num_envs
    horizon = max(1, -(-n_steps // n_envs))
    obs_dim = int(np.prod(workers.observation_space.shape))
    n_actions = int(workers.action_space.n)
    use_teacher = rng.random((horizon, n_envs)) < beta
    obs_log, act_log, mask_log, score_log, rew_log, done_log = _empty_logs(horizon, n_envs, obs_dim, n_actions)
    ends: list[list[dict[str, Any]]] = [[] for _ in range(n_envs)]
    step = [0] * n_envs
    for i in range(n_envs):
        workers.send(i, "reset", seed + i)
    running = set(range(n_envs))
    try:
        while running:
            for i in workers.ready(running):
                msg = workers.recv(i)
                if msg[0] == "reset":
                    _, obs, info, mask = msg
                else:
                    _, obs, reward, done, end_info, info, mask = msg
                    t = step[i]
                    rew_log[t, i], done_log[t, i] = reward, done
                    if done:
                        ends[i].append(end_info)
                    step[i] = t + 1
                    if progress is not None:
                        progress(1)
                t = step[i]
                if t == horizon:
                    running.discard(i)
                    continue
                obs_log[t, i] = np.asarray(obs, np.float32).reshape(-1)
                act_log[t, i] = teacher = teacher_action(info)
                mask_log[t, i] = mask
                score_log[t, i] = teacher_scores(info, n_actions)
                action = teacher if use_teacher[t, i] else int(act(obs_log[t, i][None], mask_log[t, i][None],
                                                                   np.array([teacher]))[0])
                workers.send(i, "step", action)
    except BaseException:
        workers.close()   # a worker may be mid-step; the pool cannot be reused
        raise
    episode_infos = [info for i in range(n_envs) for info in ends[i]]
    return _rollout(obs_log, act_log, mask_log, score_log, rew_log, done_log, int(use_teacher.sum()), episode_infos,
                    max_dataset)


def discounted_returns(rewards: np.ndarray, dones: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Monte-Carlo returns per env, reset at episode ends. Also returns a validity mask that drops
    the unfinished tail of each env's last episode whose return is cut short by more than ~5% of
    its weight (``gamma**k < 0.05``). A truncated episode end is treated as terminal: without a
    critic yet there is nothing to bootstrap from (docs/agents.md, value warm start)."""
    T, n = rewards.shape
    ret = np.zeros_like(rewards, dtype=np.float64)
    valid = np.zeros_like(rewards, dtype=bool)
    tail = int(np.ceil(np.log(0.05) / np.log(gamma))) if gamma < 1 else T
    for i in range(n):
        acc = 0.0
        seen_done = False
        for t in range(T - 1, -1, -1):
            if dones[t, i]:
                acc = 0.0
                seen_done = True
            acc = rewards[t, i] + gamma * acc
            ret[t, i] = acc
            valid[t, i] = seen_done or (T - 1 - t) >= tail
    return ret.astype(np.float32), valid


def class_weights(actions: np.ndarray, n_actions: int, power: float) -> np.ndarray:
    """Inverse-frequency weights ``freq**-power`` (power 0: uniform), mean weight 1 per sample."""
    counts = np.bincount(actions, minlength=n_actions).astype(np.float64)
    w = np.where(counts > 0, np.maximum(counts, 1.0) ** -power, 0.0)
    mean_per_sample = (w * counts).sum() / max(counts.sum(), 1.0)
    return (w / mean_per_sample).astype(np.float32) if mean_per_sample > 0 else np.ones(n_actions, np.float32)


def masked_logits(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return torch.where(masks, logits, torch.full_like(logits, -1e8))


def cloning_targets(actions: np.ndarray, masks: np.ndarray, scores: np.ndarray, label_smoothing: float = 0.0,
                    soft_weight: float = 0.0, temperature: float = 0.02) -> np.ndarray:
    """The target distribution per sample: the teacher's action, mixed with a softmax of its scores
    (``soft_weight``; rows without scores keep the hard label) and label smoothing.

    Soft part: ``exp((score - best) / (temperature * max(|best|, 1)))`` over the actions the
    teacher tried and the mask allows: the temperature is a share of the best score, since the
    oracle's scores grow with the traffic (a gap of 5 requests is decisive at 60, noise at
    2,000). The hard label keeps ``1 - soft_weight`` of the mass, and with it the teacher's
    tie-break (no-op first, then the smaller move): on a state where every candidate scores the
    same the no-op still has the largest share. Label smoothing then spreads ``label_smoothing``
    over the *valid* alternatives to the teacher's action only: a masked action keeps probability
    0, the clone keeps most of its mass on the teacher, so PPO's rollouts still explore around it
    and its importance ratios stay finite. In float32, in the order the hard-label recipe always
    used, so a shipped checkpoint's retrain stays bit-for-bit the same."""
    n, n_actions = masks.shape
    onehot = np.zeros((n, n_actions), np.float32)
    onehot[np.arange(n), actions] = 1.0
    target = onehot.copy()
    if soft_weight > 0 and n:
        tried = np.isfinite(scores) & masks
        has = tried[np.arange(n), actions]   # scored rows (the teacher's own choice among them)
        if has.any():
            z = np.where(tried[has], scores[has], -np.inf)
            best = z.max(axis=1, keepdims=True)
            z = (z - best) / (temperature * np.maximum(np.abs(best), 1.0))
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            target[has] = ((1.0 - soft_weight) * onehot[has] + soft_weight * p).astype(np.float32)
    if label_smoothing > 0:
        others = masks.astype(np.float32) * (np.float32(1.0) - onehot)
        n_others = others.sum(axis=1, keepdims=True)
        smooth = np.where(n_others > 0, others / np.maximum(n_others, np.float32(1.0)), np.float32(0.0))
        eps = np.where(n_others > 0, np.float32(label_smoothing), np.float32(0.0)).astype(np.float32)
        target = (np.float32(1.0) - eps) * target + eps * smooth
    return target.astype(np.float32)


def fit_bc(
    policy,
    data: Dataset,
    cfg: PretrainConfig,
    normalize: Normalizer = _identity,
    seed: int = 0,
    epochs: int | None = None,
) -> list[float]:
    """Mask-aware cross-entropy of the policy's action distribution on the teacher's targets
    (:func:`cloning_targets`: its action, soft labels from its scores, label smoothing).

    Optimises the actor (features, policy MLP branch, action head) with Adam; returns the mean loss
    of each epoch. Samples whose teacher action is masked out (should not happen) are dropped.
    """
    n_actions = data.masks.shape[1]
    ok = data.masks[np.arange(len(data)), data.actions]
    obs = torch.as_tensor(normalize(data.obs[ok]), dtype=torch.float32, device=policy.device)
    actions = torch.as_tensor(data.actions[ok], device=policy.device)
    masks = torch.as_tensor(data.masks[ok], device=policy.device)
    targets = torch.as_tensor(cloning_targets(data.actions[ok], data.masks[ok], data.scores[ok], cfg.label_smoothing,
                                              cfg.soft_label_weight, cfg.soft_label_temperature), device=policy.device)
    weights = torch.as_tensor(class_weights(data.actions[ok], n_actions, cfg.class_balance), device=policy.device)
    params = [p for name, p in policy.named_parameters() if not name.startswith(("value_net", "mlp_extractor.value_net"))]
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate)
    gen = torch.Generator().manual_seed(seed)
    n = obs.shape[0]
    history: list[float] = []
    policy.set_training_mode(True)
    for _ in range(epochs if epochs is not None else cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        total, batches = 0.0, 0
        for start in range(0, n, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            logits = masked_logits(policy_logits(policy, obs[idx]), masks[idx])
            logp = F.log_softmax(logits, dim=-1)
            target = targets[idx]
            safe_logp = torch.where(masks[idx], logp, torch.zeros_like(logp))
            loss = -(weights[actions[idx]] * (target * safe_logp).sum(-1)).sum() / weights[actions[idx]].sum()
            if cfg.entropy_coef > 0:
                entropy = -(logp.exp() * safe_logp).sum(-1).mean()
                loss = loss - cfg.entropy_coef * entropy
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.item())
            batches += 1
        history.append(total / max(batches, 1))
    policy.set_training_mode(False)
    return history


def fit_value(policy, obs: np.ndarray, returns: np.ndarray, lr: float, epochs: int, batch_size: int, seed: int) -> float:
    """Regress the value head on returns (only value parameters move); returns the final MSE."""
    params = [p for name, p in policy.named_parameters() if name.startswith(("value_net", "mlp_extractor.value_net"))]
    if not params:
        return float("nan")
    optimizer = torch.optim.Adam(params, lr=lr)
    x = torch.as_tensor(obs, dtype=torch.float32, device=policy.device)
    y = torch.as_tensor(returns, dtype=torch.float32, device=policy.device)
    gen = torch.Generator().manual_seed(seed)
    policy.set_training_mode(True)
    loss_value = float("nan")
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        total, batches = 0.0, 0
        for start in range(0, x.shape[0], batch_size):
            idx = perm[start : start + batch_size]
            values = policy.predict_values(x[idx]).squeeze(-1)
            loss = F.mse_loss(values, y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.item())
            batches += 1
        loss_value = total / max(batches, 1)
    policy.set_training_mode(False)
    return loss_value


def agreement(model, data: Dataset, normalize: Normalizer = _identity) -> dict[str, float]:
    """How often the student's greedy masked action equals the teacher's.

    ``accuracy`` over all samples; ``flip_recall`` over samples where the teacher flips (the no-op
    majority makes plain accuracy flattering); ``noop_precision`` how often a student no-op was
    a teacher no-op; per-action recall as ``recall_<a>``.
    """
    if len(data) == 0:
        return {"accuracy": float("nan"), "flip_recall": float("nan"), "samples": 0}
    scores = action_scores(model, normalize(data.obs))
    pred = masked_argmax(scores, data.masks)
    hit = pred == data.actions
    out: dict[str, float] = {"accuracy": float(hit.mean()), "samples": float(len(data))}
    if not hasattr(model.policy, "q_net"):
        logits = np.where(data.masks, scores, -np.inf)
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        out["entropy"] = float(-(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1).mean())
        out["teacher_prob"] = float(p[np.arange(len(data)), data.actions].mean())
    flips = data.actions != 0
    out["flip_recall"] = float(hit[flips].mean()) if flips.any() else float("nan")
    out["teacher_flip_share"] = float(flips.mean())
    student_noop = pred == 0
    out["noop_precision"] = float((data.actions[student_noop] == 0).mean()) if student_noop.any() else float("nan")
    for a in np.unique(data.actions):
        out[f"recall_{int(a)}"] = float(hit[data.actions == a].mean())
    return out


@dataclass
class PretrainReport:
    """What the pretraining phase measured (stored in the checkpoint's metadata)."""

    samples: int = 0
    bc_loss: list[float] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    value_mse: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "bc_loss": self.bc_loss, "rounds": self.rounds, "value_mse": self.value_mse}


def pretrain(
    model,
    envs: Sequence[gym.Env],
    cfg: PretrainConfig,
    seed: int,
    gamma: float = 0.99,
    normalizer=None,
    on_round: Callable[[int, dict[str, Any]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[PretrainReport, Dataset]:
    """Behaviour cloning from the env's teacher, then ``cfg.dagger_rounds`` DAgger rounds.

    ``normalizer`` is an SB3 ``VecNormalize`` (or None): its observation statistics are initialised
    from the teacher's data so that the cloned policy sees the same scaling RL will use.
    ``on_round(i, metrics)`` is called after each fit (round 0 = plain cloning). Agreement in each
    round is measured on the data that round *newly collected*, before refitting on it, which is
    the held-out agreement of the previous fit on the states the student itself reaches.
    """
    rng = np.random.default_rng(seed)
    policy = model.policy
    report = PretrainReport()

    def normalize(obs: np.ndarray) -> np.ndarray:
        if normalizer is None:
            return obs
        return normalizer.normalize_obs(obs).astype(np.float32)

    def student(obs: np.ndarray, masks: np.ndarray, _teacher: np.ndarray) -> np.ndarray:
        return greedy_actions(model, normalize(obs), masks)

    teacher_roll = collect(envs, cfg.teacher_steps, student, rng, beta=1.0, seed=seed, max_dataset=cfg.max_dataset, progress=progress)
    data = teacher_roll.dataset
    if normalizer is not None and normalizer.norm_obs:
        normalizer.obs_rms.update(data.obs)
    report.bc_loss = fit_bc(policy, data, cfg, normalize, seed=seed)
    metrics = {"round": 0, "beta": 1.0, "samples": len(data), "train": agreement(model, data, normalize),
               "teacher_episodes": _episode_summary(teacher_roll.episode_infos)}
    report.rounds.append(metrics)
    if on_round:
        on_round(0, metrics)
    last = teacher_roll
    for r in range(1, cfg.dagger_rounds + 1):
        beta = cfg.dagger_beta**r
        roll = collect(envs, cfg.dagger_steps, student, rng, beta=beta, seed=seed + 1000 * r, max_dataset=cfg.max_dataset, progress=progress)
        held_out = agreement(model, roll.dataset, normalize)
        data.add(roll.dataset.obs, roll.dataset.actions, roll.dataset.masks, roll.dataset.scores)
        loss = fit_bc(policy, data, cfg, normalize, seed=seed + r)
        metrics = {"round": r, "beta": beta, "samples": len(data), "on_policy_before_fit": held_out,
                   "train": agreement(model, data, normalize), "bc_loss": loss[-1],
                   "student_episodes": _episode_summary(roll.episode_infos)}
        report.rounds.append(metrics)
        if on_round:
            on_round(r, metrics)
        last = roll
    if cfg.value_pretrain and hasattr(policy, "predict_values"):
        if last.teacher_share > 0.5 or cfg.dagger_rounds == 0:
            # the value head should predict returns of the student: roll it out on its own
            last = collect(envs, cfg.dagger_steps, student, rng, beta=0.0, seed=seed + 99_991, max_dataset=cfg.max_dataset, progress=progress)
        returns, valid = discounted_returns(last.rewards, last.dones, gamma)
        obs = last.obs.reshape(-1, last.obs.shape[-1])[valid.reshape(-1)]
        if obs.shape[0]:
            report.value_mse = fit_value(policy, normalize(obs), returns.reshape(-1)[valid.reshape(-1)],
                                         lr=cfg.learning_rate, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=seed)
    report.samples = len(data)
    return report, data


def _episode_summary(infos: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of the numeric episode-level keys the env reports at episode end."""
    keys = ("slo_attainment", "goodput", "flips", "episode_slo_attainment", "episode_goodput", "episode_flips")
    out: dict[str, float] = {"episodes": float(len(infos))}
    for k in keys:
        vals = [float(i[k]) for i in infos if k in i and isinstance(i[k], (int, float, np.floating, np.integer))]
        if vals:
            out[k] = float(np.mean(vals))
    return out


__all__ = [
    "Dataset",
    "PretrainReport",
    "Rollout",
    "TeacherMissingError",
    "agreement",
    "class_weights",
    "cloning_targets",
    "collect",
    "env_masks",
    "discounted_returns",
    "fit_bc",
    "fit_value",
    "masked_argmax",
    "pretrain",
]
