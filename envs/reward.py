"""Goodput-based reward, aligned with the evaluation metric (Arrow §6.1 SLO attainment).

Per step (one control interval)::

    r_t = ( good_t − w_v · bad_t − w_p · pending_t ) / λ  −  w_f · flips_t

- ``good_t``: counted requests that finished during the step within *both* SLOs (Arrow §6.1).
- ``bad_t``: counted requests that ended during the step without meeting them (finished late or
  rejected). At the end of the episode the unfinished counted requests the end rule charges are
  added to ``bad`` of the last step (``envs.episode_end``): under ``episode.end: truncate`` those
  whose miss is already certain, under ``terminate`` all of them (offered-request denominator).
  The interval that ``reset`` advances has no step of its own; its counts go to the first step.
- Counted: arriving after the warm-up (``episode.warmup_s``; the suite's ``count_from_s``). Without
  a warm-up every request counts and the window's counts are used; with one, the env's books
  (``EpisodeOutcomes``) pass the counted requests' outcomes in ``outcomes``.
- ``pending_t``: queued requests whose predicted TTFT already exceeds the SLO
  (``MetricsWindow.pending_predicted_ttft_misses``). They are lost already, but would only show up
  in ``bad`` when they finish, possibly many steps later; penalising them while they wait gives the
  agent the signal at the step where its split caused the backlog (shaping, weight ``w_p``).
- ``λ``: offered requests per step of the episode (episode requests / arrival-window steps), so the
  reward is per offered request and one scale fits light and heavy traffic.
- ``flips_t``: instances flipped this step; ``w_f`` models engines where a flip is not free.

Two options (off by default) make the return rank controllers as the suite's serving rate does:

- ``pending_cap`` (c): the pending term becomes ``w_p · min(pending_t, c·λ) / λ``, at most
  ``w_p · c`` per step. Unbounded, it grows with the backlog at every step the backlog waits
  (quadratically in the length of an overload), so a few deeply overloaded episodes dominate a
  mean return (down to −2,800 against +120 for a fully served episode) and decide the ranking by
  *how badly* a controller fails far past its knee. The suite never asks that: a load past the
  crossing is a failure however deep. The cap keeps the early signal where the backlog starts and
  stops it from outweighing everything else.
- ``target_weight`` (w_T): at the episode's last step a terminal term
  ``w_T · n · σ((A − a*) / width)`` is added, with A the episode's attainment, a* =
  ``target_attainment`` (the suite's 0.9), σ the logistic function and n = N/λ the arrival-window
  steps (so w_T = 1 weighs the term like a fully served episode's ``good`` sum). Why it agrees with
  the serving rate: the suite's rate is the load at which attainment crosses a*; episode loads are
  drawn uniformly over a range around the knee, and attainment falls as load rises, so the expected
  terminal term is about w_T · n · P(load < the controller's crossing), which is affine in the
  crossing wherever it lies inside the drawn range. The smooth step (small width) keeps a gradient
  near the target; the dense per-step terms stay for credit assignment within the episode.

What is aligned and what the shaping changes, exactly:

- Every offered request ends in exactly one of ``good`` or ``bad``, once. So with ``w_p = w_f = 0``
  the *undiscounted* episode return is ``((1 + w_v)·G − w_v·N) / λ`` (G: requests within SLO, N:
  offered): an increasing affine function of the episode's SLO attainment G/N, whatever ``w_v``.
  The policy that maximises it is the one that maximises attainment.
- ``w_v`` with discounting (γ < 1): a miss is charged when it ends, a success paid when it ends; a
  discounted return therefore weighs early outcomes more than late ones, and ``w_v`` sets how much a
  near-term miss costs against a near-term success. It changes the preferred policy only through
  *when* outcomes land, not through which requests succeed.
- ``w_p > 0`` is not potential-based shaping and does change the objective: a request predicted to
  miss TTFT is charged ``w_p / λ`` at *every* step it waits, on top of the one ``bad`` it gets when
  it ends. The return then also prefers splits that drain queues of already-lost requests sooner,
  which attainment does not value. It buys an earlier signal for the step whose split built the
  backlog; evaluation (``arrow-rl evaluate``, the suite) judges attainment alone.
- ``w_f > 0`` charges each flip; it changes the objective by design (fewer flips at equal goodput).
- Under ``truncate`` the episode that reaches its horizon with undecided requests ends
  ``truncated``: their outcomes lie beyond it, and a learner bootstraps a value for them (SB3 does
  on ``TimeLimit.truncated``). It ends ``terminated`` once every counted request is decided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from arrow_rl.cluster.base import MetricsWindow

from envs.config import RewardConfig


@dataclass(frozen=True)
class RewardTerms:
    good: int
    bad: int
    pending: int
    flips: int
    reward: float
    terminal: float = 0.0   # the target term, included in ``reward`` (last step only)


def reward_from_counts(good: int, bad: int, pending: int, flips: int, offered_per_step: float,
                       config: RewardConfig) -> float:
    """The dense per-step reward from a step's counts: one formula for the env and for callers
    that rescore recorded episodes under other weights."""
    norm = max(offered_per_step, 1e-6)
    charged = pending if config.pending_cap is None else min(pending, config.pending_cap * norm)
    r = (good - config.violation_penalty * bad - config.pending_miss_penalty * charged) / norm
    return float(r - config.flip_penalty * flips)


def terminal_reward(attainment: float, arrival_steps: float, config: RewardConfig) -> float:
    """The target term added at the episode's last step (module docstring); 0 when off."""
    if config.target_weight == 0.0:
        return 0.0
    z = (attainment - config.target_attainment) / config.target_width
    return float(config.target_weight * arrival_steps * 0.5 * (1.0 + math.tanh(0.5 * z)))


def step_reward(window: MetricsWindow, flips: int, offered_per_step: float, config: RewardConfig,
                unfinished_at_end: int = 0, outcomes: tuple[int, int] | None = None) -> RewardTerms:
    """Reward of one step from the window's counts, or from ``outcomes`` = (good, bad) counted
    requests when a warm-up leaves some requests uncounted (see the module docstring)."""
    if outcomes is None:
        good = window.finished_within_slo
        bad = (window.finished - window.finished_within_slo) + window.rejected
    else:
        good, bad = outcomes
    bad += unfinished_at_end
    pending = window.pending_predicted_ttft_misses
    r = reward_from_counts(good, bad, pending, flips, offered_per_step, config)
    return RewardTerms(good=good, bad=bad, pending=pending, flips=flips, reward=r)
