"""Episodes built as the suite measures: a warm-up that is served but not counted, loads raised by
superposing a trace at its own time scale, loads drawn around the workload's knee, and an end rule
that truncates at the horizon without charging requests whose outcome is still open."""

from __future__ import annotations

import numpy as np
import pytest

from arrow_rl.cluster.base import SLO
from arrow_rl.evaluation.protocol import LoadSource, Protocol, build_load
from arrow_rl.workload.workload import Workload
from envs import PDClusterEnv
from envs.pd_cluster_env import load_trace_cached
from envs.serving_estimate import estimated_serving_rate

POISSON = {"kind": "poisson", "rate": 4.0, "duration_s": 120.0,
           "mix": {"input": {"kind": "fixed", "tokens": 1500}, "output": {"kind": "fixed", "tokens": 1200}}}
BIG = dict(preset="h100-llama3.1-70b-tp4", num_instances=8, slo_ttft_s=10.0, slo_tpot_s=0.125, teacher=None)


def play(env, action=lambda env, info: 0, seed=0, options=None):
    obs, info = env.reset(seed=seed, options=options)
    total, steps = 0.0, 0
    while True:
        obs, r, term, trunc, info = env.step(action(env, info))
        total += r
        steps += 1
        if term or trunc:
            return total, term, trunc, info, steps


@pytest.mark.parametrize("end,attainment,terminated", [("terminate", (0.90, 0.95), True), ("truncate", (1.0, 1.0), False)])
def test_requests_in_flight_at_the_horizon_are_not_charged_when_truncating(end, attainment, terminated):
    """No-op on Poisson 4 req/s (1,500 in / 1,200 out) on 8 x 70B, cut 12 s after the arrivals end:
    every request still decoding then would meet its SLOs, so only the terminal rule charges them."""
    env = PDClusterEnv({**BIG, "episode": {"generator": POISSON, "drain_s": 12.0, "end": end}})
    _, term, trunc, info, _ = play(env)
    stats = info["episode_stats"]
    assert (term, trunc) == (terminated, not terminated)
    assert stats["unfinished"] > 10
    assert attainment[0] <= info["slo_attainment"] <= attainment[1]
    if end == "truncate":
        assert stats["undecided"] == stats["unfinished"] and stats["charged_at_end"] == 0


def test_an_episode_that_serves_its_workload_terminates():
    env = PDClusterEnv({**BIG, "episode": {"generator": POISSON}})
    _, term, trunc, info, _ = play(env)
    assert term and not trunc
    assert info["slo_attainment"] == pytest.approx(1.0) and info["episode_stats"]["unfinished"] == 0


def test_certain_misses_are_charged_at_truncation():
    """An overloaded 4 x 8B cluster: queued requests past arrival + TTFT SLO are charged at the cut,
    the rest stay undecided, and the return counts each counted request once."""
    env = PDClusterEnv(num_instances=4, teacher=None, reward={"pending_miss_penalty": 0.0},
                       episode={"traces": ["azure-conv"], "duration_s": 20.0, "drain_s": 5.0, "rate_scale": (18.0, 18.0)})
    total, term, trunc, info, _ = play(env, options={"start_s": 900.0})
    stats = info["episode_stats"]
    assert trunc and not term and stats["charged_at_end"] > 0 and stats["undecided"] > 0
    decided = stats["offered"] - stats["undecided"]
    assert stats["slo_attainment"] == pytest.approx(stats["within_slo"] / decided)
    assert total == pytest.approx((2 * stats["within_slo"] - decided) / env._offered_per_step, rel=1e-9)


def test_an_episode_whose_every_request_is_decided_terminates():
    """Far past saturation every request left at the cut is a certain miss: nothing the agent does
    can change the episode any more, so it is terminal, not cut short."""
    env = PDClusterEnv(num_instances=4, teacher=None,
                       episode={"traces": ["azure-conv"], "duration_s": 20.0, "drain_s": 2.0, "rate_scale": (30.0, 30.0)})
    _, term, trunc, info, _ = play(env, options={"start_s": 900.0})
    stats = info["episode_stats"]
    assert term and not trunc and stats["undecided"] == 0 and stats["charged_at_end"] == stats["unfinished"] > 0


def test_sb3_bootstraps_at_truncation():
    """SB3's VecEnv marks the cut ``TimeLimit.truncated`` and keeps the last observation, which is
    what PPO and MaskablePPO bootstrap the value from."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([lambda: PDClusterEnv({**BIG, "episode": {"generator": {**POISSON, "duration_s": 20.0},
                                                                 "drain_s": 5.0}})])
    venv.reset()
    for _ in range(100):
        _, _, dones, infos = venv.step(np.zeros(1, dtype=int))
        if dones[0]:
            break
    assert dones[0] and infos[0]["TimeLimit.truncated"] and "terminal_observation" in infos[0]


def synthetic(n, span, inp=500, out=50):
    return Workload(np.linspace(0.0, span, n, endpoint=False), np.full(n, inp), np.full(n, out))


def test_warmup_requests_are_served_but_not_counted():
    """20 s of warm-up under Arrow before the first step: its requests are served, never rewarded,
    and the return is exactly that of the counted requests."""
    wl = synthetic(200, 20.0)
    env = PDClusterEnv(num_instances=4, reward={"pending_miss_penalty": 0.0},
                       episode={"warmup_s": 20.0, "end": "terminate"})
    obs, info = env.reset(seed=0, options={"workload": wl, "duration_s": 20.0})
    assert env.cluster.now == pytest.approx(21.0)            # warm-up, then reset's own first interval
    assert len(env.workload) == 400 and info["episode_desc"]["warmup_requests"] == 200
    assert env.observation_space.contains(obs)
    total, term, _, info, _ = play(env, options={"workload": wl, "duration_s": 20.0})
    stats = info["episode_stats"]
    assert term and stats["offered"] == 200 and stats["warmup_s"] == 20.0
    assert sum(1 for r in env.cluster.completed() if r.arrival_s < 20.0) == 200   # served
    assert total == pytest.approx((2 * stats["within_slo"] - 200) / env._offered_per_step, rel=1e-9)


def test_warmup_runs_the_warmup_controller():
    """Overloaded at the start, Arrow's interval controller flips during the warm-up; the agent's
    flip count starts after it."""
    env = PDClusterEnv(num_instances=8, teacher=None, initial_prefill=7,
                       episode={"traces": ["azure-conv"], "duration_s": 5.0, "rate_scale": (20.0, 20.0),
                                "warmup_s": 30.0})
    env.reset(seed=0, options={"start_s": 600.0})
    assert len(env.cluster.flip_history()) > 0
    _, _, _, info, _ = play(env, options={"start_s": 600.0})
    assert info["flip_count"] == 0


def test_superposed_episodes_are_the_suites_loads():
    """load_mode superpose builds the episode with the suite's protocol: the same requests as
    build_load for the seed it drew, at the trace's own time scale."""
    env = PDClusterEnv(num_instances=8, teacher=None,
                       episode={"traces": ["azure-conv"], "duration_s": 60.0, "rate_scale": (3.5, 3.5),
                                "warmup_s": 30.0, "load_mode": "superpose"})
    _, info = env.reset(seed=4)
    desc = info["episode_desc"]
    trace = load_trace_cached("azure-conv")
    load = build_load(LoadSource("azure-conv", trace=trace), 3.5, desc["load_seed"],
                      Protocol(rate_mode="superpose", warmup_s=30.0, span_s=60.0, seeds=(desc["load_seed"],)))
    np.testing.assert_array_equal(env.workload.arrival_s, load.workload.arrival_s)
    assert desc["requests"] == load.counted_requests and env._count_from_s == 30.0
    assert env._arrival_end_s == pytest.approx(90.0)
    with pytest.raises(ValueError, match="superpose"):
        env.reset(seed=0, options={"start_s": 10.0})


def test_superposed_generators_keep_their_time_structure():
    env = PDClusterEnv({**BIG, "episode": {"generator": POISSON, "rate_scale": (2.0, 2.0), "load_mode": "superpose"}})
    env.reset(seed=0)
    assert env._arrival_end_s == pytest.approx(120.0)   # compress would end the arrivals at 60 s
    assert 8.0 * 0.85 < len(env.workload) / 120.0 < 8.0 * 1.15


def test_knee_relative_loads_follow_the_cluster_size():
    """knee_factor draws f and replays the trace at f x its estimated serving rate on the episode's
    cluster: twice the instances, twice the rate."""
    trace = load_trace_cached("azure-conv")
    scales = {}
    for n in (4, 8):
        env = PDClusterEnv(num_instances=n, teacher=None,
                           episode={"traces": ["azure-conv"], "duration_s": 10.0, "knee_factor": (0.7, 1.3),
                                    "load_mode": "superpose"})
        _, info = env.reset(seed=2)
        scales[n] = info["episode_desc"]["rate_scale"]
        knee = estimated_serving_rate(trace, env.config.preset, n, SLO(2.0, 0.1), "azure-conv") / trace.mean_rate
        assert 0.7 <= scales[n] / knee <= 1.3
    assert scales[8] / scales[4] == pytest.approx(2.0)


def test_episode_options_are_checked_when_the_env_is_made():
    from envs.config import EnvConfigError

    with pytest.raises(EnvConfigError, match="warmup_controller"):
        PDClusterEnv(episode={"warmup_s": 10.0, "warmup_controller": "arow"})
    with pytest.raises(EnvConfigError, match="knee_factor"):
        PDClusterEnv(episode={"knee_factor": (1.3, 0.7)})
    with pytest.raises(EnvConfigError, match="load_mode"):
        PDClusterEnv(episode={"load_mode": "stretch"})
