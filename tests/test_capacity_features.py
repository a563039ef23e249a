"""Capacity-relative load features (``observation.load_features: capacity``, envs/pool_observation.py):
offered load in units of the instance's profiled prefill time and decode context, so that a model
twice as fast reads half the load."""

from __future__ import annotations

import math

import pytest

from arrow_rl.cluster.base import SLO, InstanceView, MetricsWindow, PoolStats, Role
from arrow_rl.control import ControlState
from arrow_rl.perf.presets import get_preset
from arrow_rl.perf.profile import InstanceProfile, profile_instance
from envs import PDClusterEnv
from envs.config import EnvConfig, ObservationConfig
from envs.pool_observation import (POOL_FEATURE_NAMES, PoolObservationBuilder, offered_load, pool_features,
                                   reference_profile)

SLO_LOOSE = SLO(10.0, 0.125)
PROFILE = InstanceProfile(prefill_a=1e-8, prefill_b=5e-5, prefill_c=0.01, decode_slope=1e-7, decode_intercept=0.025)
CAPACITY = ObservationConfig(kind="pools", load_features="capacity")


def window(arrivals: int, prompt: float, output: float, finished: int = 0, duration: float = 1.0) -> MetricsWindow:
    return MetricsWindow(start_s=0.0, end_s=duration, prefill=PoolStats(), decode=PoolStats(), instances=(),
                         arrivals=arrivals, arrival_input_tokens_mean=prompt, finished_output_tokens_mean=output,
                         finished=finished)


def views(n: int, kv: int = 10**9) -> list[InstanceView]:
    return [InstanceView(i, Role.PREFILL if i < n // 2 else Role.DECODE, 0, 0, 0.0, 0, 0, 0, kv) for i in range(n)]


def scaled(profile: InstanceProfile, k: float) -> InstanceProfile:
    """The same instance ``k`` times faster at everything."""
    return InstanceProfile(profile.prefill_a / k, profile.prefill_b / k, profile.prefill_c / k,
                           profile.decode_slope / k, profile.decode_intercept / k)


def test_prefill_load_is_arrivals_per_instance_times_the_prefill_time():
    prefill, _ = offered_load(window(8, 1000, 100), 4, SLO_LOOSE, PROFILE)
    assert prefill == pytest.approx(2 * PROFILE.prefill_time(1000))


def test_decode_load_is_littles_law_context_over_the_slo_bound_context():
    _, decode = offered_load(window(8, 1000, 100), 4, SLO_LOOSE, PROFILE)
    context = 2 * 100 * 0.125 * (1000 + 50)
    assert decode == pytest.approx(context / PROFILE.max_tokens(0.125))


def test_a_kv_cache_smaller_than_the_slo_bound_context_is_the_decode_capacity():
    _, by_slo = offered_load(window(8, 1000, 100), 4, SLO_LOOSE, PROFILE)
    _, by_kv = offered_load(window(8, 1000, 100), 4, SLO_LOOSE, PROFILE, kv_capacity_tokens=10_000)
    assert by_kv == pytest.approx(2 * 100 * 0.125 * 1050 / 10_000) and by_kv > by_slo


def test_an_instance_that_cannot_meet_the_tpot_slo_reads_infinite_decode_load():
    slow = InstanceProfile(0.0, 1e-4, 0.02, 1e-7, 0.2)   # the intercept alone misses 0.125 s
    assert offered_load(window(8, 1000, 100), 4, SLO_LOOSE, slow)[1] == math.inf
    assert offered_load(window(0, 0, 0), 4, SLO_LOOSE, slow) == (0.0, 0.0)


def frame(profile: InstanceProfile, arrivals: int, n: int = 4) -> dict[str, float]:
    b = PoolObservationBuilder(SLO_LOOSE, n, CAPACITY, profile=profile)
    obs = b.build(ControlState(now=1.0, window=window(arrivals, 1000, 200, finished=arrivals), instances=views(n)))
    return dict(zip(b.feature_names, obs))


def test_a_model_twice_as_fast_at_twice_the_rate_reads_the_same_prefill_load():
    slow, fast = frame(PROFILE, 6), frame(scaled(PROFILE, 2.0), 12)
    assert fast["offered_prefill"] == pytest.approx(slow["offered_prefill"], rel=1e-5)
    # its decode iterations also halve their fixed cost, so MT(SLO_TPOT) more than doubles
    assert 0 < fast["offered_decode"] < slow["offered_decode"]
    no_fixed_cost = InstanceProfile(PROFILE.prefill_a, PROFILE.prefill_b, PROFILE.prefill_c, PROFILE.decode_slope, 0.0)
    slow, fast = frame(no_fixed_cost, 6), frame(scaled(no_fixed_cost, 2.0), 12)
    for name in ("offered_decode", "offered_prefill_share"):
        assert fast[name] == pytest.approx(slow[name], rel=1e-5), name
    assert frame(PROFILE, 12)["offered_prefill"] == pytest.approx(2 * slow["offered_prefill"], rel=1e-5)


def test_capacity_replaces_the_raw_rates_in_place_and_appends_the_prefill_share():
    raw = [f.name for f in pool_features(ObservationConfig(kind="pools"))]
    cap = [f.name for f in pool_features(CAPACITY)]
    assert raw == list(POOL_FEATURE_NAMES) and len(cap) == len(raw) + 1 and cap[-1] == "offered_prefill_share"
    swapped = {a: b for a, b in zip(raw, cap) if a != b}
    assert swapped == {"arrival_rate": "offered_prefill", "arrival_prompt_rate": "offered_decode",
                       "finished_rate": "finished_per_arrival"}


def test_the_output_length_carries_over_windows_where_nothing_finished():
    b = PoolObservationBuilder(SLO_LOOSE, 4, CAPACITY, profile=PROFILE)
    names = b.feature_names
    b.build(ControlState(1.0, window(8, 1000, 300, finished=3), views(4)))
    quiet = dict(zip(names, b.build(ControlState(2.0, window(8, 1000, 0.0, finished=0), views(4)))))
    assert quiet["offered_decode"] == pytest.approx(offered_load(window(8, 1000, 300), 4, SLO_LOOSE, PROFILE)[1])
    b.reset()
    fresh = dict(zip(names, b.build(ControlState(1.0, window(8, 1000, 0.0, finished=0), views(4)))))
    assert fresh["offered_decode"] == 0.0


def test_without_a_profile_the_builder_says_what_is_missing():
    b = PoolObservationBuilder(SLO_LOOSE, 4, CAPACITY)
    with pytest.raises(ValueError, match="load_features 'capacity' needs the instances' profile"):
        b.build(ControlState(1.0, window(4, 100, 10), views(4)))


def test_the_cluster_encoding_refuses_capacity_features_by_name():
    with pytest.raises(ValueError, match="observation.load_features='capacity' needs observation.kind 'pools'"):
        EnvConfig(observation={"kind": "cluster", "load_features": "capacity"})


def test_reference_profile_takes_the_lowest_numbered_instance():
    other = scaled(PROFILE, 3.0)
    assert reference_profile({3: other, 1: PROFILE}) is PROFILE
    assert reference_profile({}) is None and reference_profile(None) is None and reference_profile(PROFILE) is PROFILE


def test_every_episode_measures_load_against_the_model_it_drew():
    env = PDClusterEnv({"action": {"kind": "splits"}, "observation": {"kind": "pools", "load_features": "capacity"},
                        "preset": "h100-llama3.1-70b-tp4", "slo_ttft_s": 10.0, "slo_tpot_s": 0.125,
                        "episode": {"duration_s": 5, "drain_s": 1},
                        "distribution": {"presets": ["h100-llama3.1-70b-tp4", "a100-llama3-8b-tp1"],
                                         "num_instances": [4, 8]}})
    seen = set()
    for seed in range(12):
        env.reset(seed=seed)
        preset = env.cluster.info.preset
        assert env.obs_builder.profile == profile_instance(get_preset(preset))
        seen.add(preset)
    assert len(seen) == 2
