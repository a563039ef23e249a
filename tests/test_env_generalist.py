"""The size-free, three-role env (issue 12): pool observation, training distribution, MIXED serving,
the oracle-moves teacher."""

from __future__ import annotations

import numpy as np
import pytest

from arrow_rl.cluster.base import SLO, Role
from arrow_rl.control import ControlState
from arrow_rl.controllers.whatif import RECORDED_FUTURE
from arrow_rl.workload.generators import parse_spec
from envs import PDClusterEnv
from envs.config import DistributionConfig, EnvConfig
from envs.distribution import draw_episode, random_split
from envs.move_teacher import MoveOracleTeacher
from envs.moves import role_counts
from envs.pool_observation import POOL_FEATURE_NAMES, PoolObservationBuilder

THREE = {"action": {"kind": "moves"}, "observation": {"kind": "pools"}}
SMALL = {**THREE, "preset": "h100-llama3.1-70b-tp4", "slo_ttft_s": 10.0, "slo_tpot_s": 0.125,
         "episode": {"traces": ["azure-code"], "duration_s": 20, "drain_s": 5, "rate_scale": [8.0, 8.0]}}


def run_episode(env, seed, choose=lambda info, env: 0):
    obs, info = env.reset(seed=seed)
    shapes = {obs.shape}
    while True:
        obs, _r, term, trunc, info = env.step(choose(info, env))
        shapes.add(obs.shape)
        if term or trunc:
            return info, shapes


def test_observation_length_is_the_same_for_every_cluster_size():
    lengths = set()
    for n in (4, 8, 32):
        env = PDClusterEnv({**SMALL, "num_instances": n, "teacher": None})
        obs, _ = env.reset(seed=0)
        lengths.add(obs.shape)
        assert env.observation_space.contains(obs)
    assert lengths == {(4 * len(POOL_FEATURE_NAMES),)}


def test_pool_observation_reads_the_split_as_fractions():
    env = PDClusterEnv({**SMALL, "num_instances": 8, "teacher": None, "emulator": {"num_mixed": 2}}, initial_prefill=3)
    obs, _ = env.reset(seed=0)
    names = env.obs_builder.feature_names
    frame = dict(zip(names, obs))
    assert frame["p_fraction"] == pytest.approx(3 / 8)
    assert frame["d_fraction"] == pytest.approx(3 / 8)
    assert frame["m_fraction"] == pytest.approx(2 / 8)
    assert frame["inverse_size"] == pytest.approx(1 / 8)


def test_pool_observation_is_pure_in_the_control_state():
    env = PDClusterEnv({**SMALL, "num_instances": 6, "teacher": None})
    env.reset(seed=1)
    env.step(0)
    state: ControlState = env.control_state
    a = PoolObservationBuilder(SLO(10.0, 0.125), 6, env.config.observation).build(state)
    b = PoolObservationBuilder(SLO(10.0, 0.125), 6, env.config.observation).build(state)
    assert np.array_equal(a, b)


def test_an_all_mixed_cluster_serves_its_requests():
    env = PDClusterEnv({**SMALL, "num_instances": 4, "teacher": None, "emulator": {"num_mixed": 4}})
    info, _ = run_episode(env, seed=0)
    assert info["split"] == (0, 0, 4)
    assert info["episode_stats"]["within_slo"] > 0


def test_mixed_instances_get_requests_beside_a_disaggregated_path():
    env = PDClusterEnv({**SMALL, "num_instances": 6, "teacher": "arrow-interval", "emulator": {"num_mixed": 2}},
                       initial_prefill=2)
    env.reset(seed=0)
    served_mixed = 0
    for _ in range(15):
        _o, _r, term, _t, _i = env.step(0)
        served_mixed += env.control_state.window.mixed.first_tokens
        if term or _t:
            break
    assert served_mixed > 0


def test_distribution_draws_size_split_preset_and_tier_per_episode():
    dist = {"num_instances": [4, 32], "trace_probability": 0.5, "mixed_start_probability": 0.5}
    env = PDClusterEnv({**SMALL, "teacher": None, "distribution": dist,
                        "episode": {"duration_s": 8, "drain_s": 2}})
    sizes, tiers, sources = set(), set(), set()
    for seed in range(12):
        obs, info = env.reset(seed=seed)
        assert obs.shape == env.observation_space.shape
        d = env._episode_desc
        sizes.add(d["num_instances"])
        tiers.add(d["slo_tier"])
        sources.add(d["source"].split(":")[0])
        p, dd, m = d["split"]
        assert p + dd + m == d["num_instances"] and (p == 0) == (dd == 0)
        assert info["split"] == tuple(d["split"])
        assert env.action_masks()[0]
    assert min(sizes) >= 4 and max(sizes) <= 32 and len(sizes) > 3
    assert tiers == {"loose", "interactive"}
    assert "generator" in sources and sources - {"generator"}


def test_distribution_draws_are_seeded():
    dist = DistributionConfig()
    a = draw_episode(np.random.default_rng(3), dist, 60.0)
    b = draw_episode(np.random.default_rng(3), dist, 60.0)
    assert a == b


def test_random_splits_are_valid_starting_splits():
    rng = np.random.default_rng(0)
    for n in (4, 5, 17, 32):
        for _ in range(200):
            p, d, m = random_split(rng, n, 0.5)
            assert p + d + m == n and (p == 0) == (d == 0) and min(p, d, m) >= 0


def test_drawn_generators_are_valid_specs():
    dist = DistributionConfig(trace_probability=0.0)
    rng = np.random.default_rng(1)
    kinds = set()
    for _ in range(40):
        draw = draw_episode(rng, dist, 60.0)
        spec = parse_spec(draw.generator)
        kinds.add(spec.kind)
    assert kinds == {"poisson", "gamma", "mmpp", "phase_shift"}


def test_preset_weights_set_how_often_each_model_is_drawn():
    dist = DistributionConfig(presets=["h100-llama3.1-70b-tp4", "h100-llama2-7b-tp1"], preset_weights=[3, 1])
    rng = np.random.default_rng(0)
    drawn = [draw_episode(rng, dist, 60.0).preset for _ in range(800)]
    share = drawn.count("h100-llama3.1-70b-tp4") / len(drawn)
    assert 0.70 < share < 0.80          # 3/4, binomial sd 0.015
    only_second = DistributionConfig(presets=["h100-llama3.1-70b-tp4", "h100-llama2-7b-tp1"], preset_weights=[0, 1])
    assert {draw_episode(rng, only_second, 60.0).preset for _ in range(50)} == {"h100-llama2-7b-tp1"}


@pytest.mark.parametrize("weights, match", [([1.0], "1 entries for 2 presets"), ([0, 0], "not all 0"),
                                            ([1, -1], ">= 0"), ([1, float("nan")], "finite")])
def test_bad_preset_weights_are_named(weights, match):
    with pytest.raises(ValueError, match=match):
        DistributionConfig(presets=["h100-llama3.1-70b-tp4", "h100-llama2-7b-tp1"], preset_weights=weights)


def test_an_unknown_preset_in_the_distribution_is_named_before_any_episode():
    with pytest.raises(ValueError, match="presets: unknown preset 'tpu-v9'; valid presets: h100-"):
        DistributionConfig(presets=["h100-llama3.1-70b-tp4", "tpu-v9"])


def test_rates_by_capacity_load_a_faster_model_with_more_traffic():
    from arrow_rl.perf.capacity import relative_capacity

    base = dict(presets=["h100-llama3.1-70b-tp4", "h100-llama2-7b-tp1"], preset_weights=[0, 1])
    factor = relative_capacity("h100-llama2-7b-tp1", "h100-llama3.1-70b-tp4")
    assert factor > 1.2                  # a 7B TP1 instance serves more than a 70B TP4 one
    for trace_probability in (0.0, 1.0):
        plain = DistributionConfig(**base, trace_probability=trace_probability)
        scaled = DistributionConfig(**base, trace_probability=trace_probability, rates_by_capacity=True)
        a = draw_episode(np.random.default_rng(5), plain, 60.0)
        b = draw_episode(np.random.default_rng(5), scaled, 60.0)   # same stream, only the rate differs
        if trace_probability:
            assert b.trace_rate_scale == pytest.approx(a.trace_rate_scale * factor)
        else:
            rate = {"poisson": "rate", "gamma": "rate", "phase_shift": "rate", "mmpp": "rates"}[a.generator["kind"]]
            ra, rb = np.ravel(a.generator[rate]), np.ravel(b.generator[rate])
            assert rb[0] == pytest.approx(ra[0] * factor, rel=1e-3)
    same = DistributionConfig(rates_by_capacity=True)   # one preset: its own reference, factor 1
    assert draw_episode(np.random.default_rng(2), same, 60.0) == draw_episode(np.random.default_rng(2),
                                                                             DistributionConfig(), 60.0)


def test_three_role_encodings_go_together():
    with pytest.raises(ValueError, match="moves"):
        EnvConfig(action={"kind": "moves"})
    with pytest.raises(ValueError, match="distribution"):
        EnvConfig(distribution={})
    with pytest.raises(ValueError, match="oracle-moves"):
        EnvConfig(teacher="oracle-moves")


def test_the_two_role_env_still_refuses_mixed_instances():
    with pytest.raises(ValueError, match="num_mixed"):
        PDClusterEnv({"emulator": {"num_mixed": 2}}).reset(seed=0)


def test_oracle_moves_labels_the_best_scoring_candidate():
    env = PDClusterEnv({**SMALL, "num_instances": 6, "teacher": "oracle-moves",
                        "teacher_config": {"candidate_fractions": [0.25], "lookahead_s": 10.0}})
    _obs, info = env.reset(seed=2)
    teacher: MoveOracleTeacher = env.teacher
    assert isinstance(teacher, MoveOracleTeacher)
    label = info["teacher_action"]
    assert info["action_mask"][label]
    views = list(env.control_state.instances)
    counts = role_counts(views)
    scores = {}
    for a in teacher._candidates:
        flips = [] if a == 0 else env.codec.flips(a, views, teacher.profiles)
        if flips is not None:
            scores[a] = teacher.planner.score(teacher.cluster, flips, RECORDED_FUTURE)
    best = max(scores.values())
    moved = {a: sum(abs(x - y) for x, y in zip(env.codec.result(a, counts), counts)) for a in scores}
    # ties keep the no-op, then the smaller move, then the lower index
    assert label == min((a for a, s in scores.items() if s == best), key=lambda a: (moved[a], a))


def test_oracle_moves_keeps_the_split_when_nothing_is_at_stake():
    env = PDClusterEnv({**SMALL, "num_instances": 4, "teacher": "oracle-moves",
                        "episode": {"traces": ["azure-code"], "duration_s": 20, "drain_s": 5, "rate_scale": [0.01, 0.01]}})
    info, _ = run_episode(env, seed=0, choose=lambda info, env: info["teacher_action"])
    assert info["episode_stats"]["flip_count"] == 0


def test_oracle_moves_relieves_an_overloaded_cluster():
    # 1 prefill for 5 decode instances under heavy code traffic: the lookahead sees TTFT misses coming
    env = PDClusterEnv({**SMALL, "num_instances": 6, "teacher": "oracle-moves", "initial_prefill": 1,
                        "teacher_config": {"candidate_fractions": [0.25], "lookahead_s": 10.0},
                        "episode": {"traces": ["azure-code"], "duration_s": 12, "drain_s": 2, "rate_scale": [10.0, 10.0]}})
    info, _ = run_episode(env, seed=0, choose=lambda info, env: info["teacher_action"])
    assert info["episode_stats"]["flip_count"] > 0
    assert info["split"][0] > 1 or info["split"][2] > 0
