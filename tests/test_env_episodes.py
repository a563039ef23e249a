"""Whole episodes on the emulator: masks, bounds under extreme load, reward sanity, no lost
requests across flips, and the Arrow-in-env equivalence with ``run_policy``."""

from __future__ import annotations

import numpy as np
import pytest

from arrow_rl.cluster.base import Role
from arrow_rl.workload.workload import Workload
from envs import PDClusterEnv
from envs.backends import emulator_config

SMALL = dict(num_instances=4, episode={"traces": ["azure-conv"], "duration_s": 20.0, "drain_s": 15.0})


def run(env, policy, seed=0, options=None, max_steps=10_000):
    obs, info = env.reset(seed=seed, options=options)
    total, infos = 0.0, [info]
    for _ in range(max_steps):
        a = policy(env, info)
        obs, r, term, trunc, info = env.step(a)
        assert env.observation_space.contains(obs)
        total += r
        infos.append(info)
        if term or trunc:
            break
    return total, infos


def random_policy(seed):
    rng = np.random.default_rng(seed)
    return lambda env, info: int(rng.choice(np.flatnonzero(env.action_masks())))


def test_masks_never_allow_emptying_a_pool_along_random_rollouts():
    env = PDClusterEnv({**SMALL, "action": {"max_flips_per_step": 3}})
    for seed in range(3):
        _, infos = run(env, random_policy(seed), seed=seed)
        for info in infos:
            assert 1 <= info["num_prefill"] <= 3
        roles = [v.role for v in env.cluster.instances()]
        assert Role.PREFILL in roles and Role.DECODE in roles


def synthetic(n, span, inp=1000, out=100):
    return Workload(np.sort(np.linspace(0.0, span, n, endpoint=False)), np.full(n, inp), np.full(n, out))


@pytest.mark.parametrize("case", ["empty", "overload", "burst100x"])
def test_observations_stay_in_bounds_under_extreme_load(case):
    if case == "empty":
        wl = Workload(np.zeros(0), np.zeros(0, dtype=int), np.zeros(0, dtype=int))
    elif case == "overload":
        wl = synthetic(2000, 10.0, inp=4000, out=400)
    else:  # a steady 2 req/s with one second carrying 100x that
        base = synthetic(20, 10.0)
        burst = synthetic(200, 1.0)
        arr = np.concatenate([base.arrival_s, burst.arrival_s + 5.0])
        order = np.argsort(arr, kind="stable")
        wl = Workload(arr[order], np.full(220, 1000)[order], np.full(220, 100)[order])
    env = PDClusterEnv({**SMALL, "episode": {"duration_s": 10.0, "drain_s": 10.0}})
    _, infos = run(env, random_policy(0), options={"workload": wl, "duration_s": 10.0})
    assert infos[-1]["episode_stats"]["offered"] == len(wl)


def test_a_sensible_split_earns_more_than_a_starved_decode_pool():
    """Reward sign sanity: holding 4P4D beats starving decode with 7P1D on the same window
    (8 x H100 8B at 16x the Azure conversation rate: 4P4D meets the SLOs, one decode instance cannot)."""
    cfg = dict(num_instances=8, teacher_in_info=False,
               episode={"traces": ["azure-conv"], "duration_s": 20.0, "drain_s": 20.0, "rate_scale": (16.0, 16.0)})
    noop = lambda env, info: 0  # noqa: E731
    balanced, bi = run(PDClusterEnv({**cfg, "initial_prefill": 4}), noop, options={"start_s": 600.0})
    starved, si = run(PDClusterEnv({**cfg, "initial_prefill": 7}), noop, options={"start_s": 600.0})
    assert bi[-1]["slo_attainment"] > 0.9 > si[-1]["slo_attainment"]
    assert balanced > starved


def test_flipping_every_step_loses_no_request():
    env = PDClusterEnv({**SMALL, "episode": {"traces": ["azure-conv"], "duration_s": 20.0}})
    flip = {"i": 0}

    def alternate(env, info):  # P→D then D→P, forever
        flip["i"] += 1
        a = 1 if flip["i"] % 2 else 3
        return a if env.action_masks()[a] else 0

    _, infos = run(env, alternate, options={"start_s": 300.0})
    stats = infos[-1]["episode_stats"]
    assert stats["flip_count"] >= 10
    records = env.cluster.completed()
    assert env.cluster.done
    assert sorted(r.request_id for r in records) == list(range(stats["offered"]))
    assert all(r.finished for r in records)


@pytest.mark.parametrize("spec", ["arrow-interval", "arrow", "dynamo"])
def test_arrow_in_env_reproduces_run_policy(spec):
    """An env whose every action is info["teacher_action"] gives run_policy's records for the same
    seed (28x the conversation rate overloads 8 x 8B, so the controllers flip). Also for the
    event-driven Arrow (its router flips inside the cluster) and the Dynamo-style planner."""
    from arrow_rl.controllers.registry import make_policy
    from arrow_rl.evaluation.runner import run_policy

    # end "terminate" plays run_policy's horizon to the end; "truncate" stops once every request is
    # decided, with the same attainment (test_truncation_stops_early_with_run_policys_attainment)
    cfg = dict(num_instances=8, teacher=spec,
               episode={"traces": ["azure-conv"], "duration_s": 30.0, "rate_scale": (28.0, 28.0), "end": "terminate"})
    env = PDClusterEnv(cfg)
    seed = 11
    _, infos = run(env, lambda env, info: info["teacher_action"], options={"start_s": 900.0, "cluster_seed": seed})
    env_records = sorted(env.cluster.completed(), key=lambda r: r.request_id)
    flips = infos[-1]["episode_stats"]["flip_count"]

    policy = make_policy(spec, 8)
    result = run_policy(env.workload, emulator_config(env.config, policy.initial_prefill), policy,
                        control_interval_s=1.0, seed=seed)
    assert flips == sum(1 for f in result.flips if f.source == "controller")
    assert len(result.flips) > 0
    assert infos[-1]["slo_attainment"] == pytest.approx(result.attainment)
    assert env_records == sorted(result.records, key=lambda r: r.request_id)


def test_flip_cost_reaches_the_backend_and_the_reward():
    """The optional flip cost: flip_delay_s goes to the cluster, flip_penalty into the reward."""
    env = PDClusterEnv({**SMALL, "teacher_in_info": False, "flip_delay_s": 2.0,
                        "reward": {"flip_penalty": 0.5, "pending_miss_penalty": 0.0, "violation_penalty": 0.0}})
    env.reset(seed=0, options={"start_s": 300.0})
    assert env.cluster.info.extra["flip_delay_s"] == 2.0
    _, reward, _, _, info = env.step(1)
    terms = info["reward_terms"]
    assert len(info["applied_flips"]) == 1 and terms.flips == 1
    assert reward == pytest.approx(terms.good / env._offered_per_step - 0.5)
    _, reward, _, _, info = env.step(0)
    assert reward == pytest.approx(info["reward_terms"].good / env._offered_per_step)


def test_episode_return_matches_the_evaluated_attainment_exactly():
    """With no shaping, return = ((1 + w_v)·G − w_v·N)/λ on a real emulator episode, N the decided
    requests: the reward counts each once (reset's window included, certain misses at the cut)."""
    w_v = 1.0
    env = PDClusterEnv({**SMALL, "teacher_in_info": False, "episode": {"traces": ["azure-code"], "duration_s": 20.0,
                                                                         "drain_s": 3.0, "rate_scale": (12.0, 12.0)},
                        "reward": {"violation_penalty": w_v, "pending_miss_penalty": 0.0}})
    total, infos = run(env, random_policy(1), options={"start_s": 1200.0})
    stats = infos[-1]["episode_stats"]
    lam = env._offered_per_step
    assert stats["offered"] > 50 and 0.0 < stats["slo_attainment"] < 1.0
    decided = stats["offered"] - stats["undecided"]   # truncation charges no request still open
    expected = ((1 + w_v) * stats["within_slo"] - w_v * decided) / lam
    assert total == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_the_target_term_is_paid_once_at_the_last_step():
    """With the target term on, the return is the dense return plus w_T·n·σ((A − a*)/width), paid on
    the last step only; the same seed gives the same episode, so the difference is exactly it."""
    from envs.reward import terminal_reward
    from envs.config import RewardConfig

    base = {**SMALL, "teacher_in_info": False, "episode": {"traces": ["azure-code"], "duration_s": 20.0,
                                                           "drain_s": 3.0, "rate_scale": (12.0, 12.0)}}
    target = {"target_weight": 1.0, "target_attainment": 0.5, "target_width": 0.1}
    plain, _ = run(PDClusterEnv(base), random_policy(1), options={"start_s": 1200.0})
    env = PDClusterEnv({**base, "reward": target})
    total, infos = run(env, random_policy(1), options={"start_s": 1200.0})
    stats = infos[-1]["episode_stats"]
    bonus = terminal_reward(stats["slo_attainment"], stats["offered"] / env.offered_per_step,
                            RewardConfig(**target))
    assert bonus > 0 and infos[-1]["reward_terms"].terminal == pytest.approx(bonus)
    assert all(i["reward_terms"].terminal == 0.0 for i in infos[1:-1])   # infos[0]: reset's
    assert total == pytest.approx(plain + bonus, rel=1e-9)
