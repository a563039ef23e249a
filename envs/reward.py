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
    norm = max(offered_per_step, 1e-6)
    r = (good - config.violation_penalty * bad - config.pending_miss_penalty * pending) / norm
    r -= config.flip_penalty * flips
    return RewardTerms(good=good, bad=bad, pending=pending, flips=flips, reward=float(r))
