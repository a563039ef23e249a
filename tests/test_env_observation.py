"""ObservationBuilder: bounds, normalisation, history, role-change tracking (no cluster needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arrow_rl.cluster.base import SLO, InstanceView, InstanceWindowStats, MetricsWindow, PoolStats, Role
from arrow_rl.control import ControlState
from envs.config import ObservationConfig
from envs.observation import FEATURE_NAMES, OBSERVATION_FEATURES, ObservationBuilder, frame_features

SLO_ = SLO(2.0, 0.1)


def views(roles, prefill_tokens=0, decode_tokens=0, kv_used=0, num_prefill=0, num_decode=0):
    return [InstanceView(i, r, num_prefill, prefill_tokens, float(prefill_tokens) ** 2, num_decode, decode_tokens,
                         kv_used, 100_000) for i, r in enumerate(roles)]


def window(start, end, roles, scale=0.0, **extra):
    """A window whose every count/latency is proportional to ``scale`` (0 = idle cluster)."""
    s = scale
    pool = PoolStats(num_instances=len(roles), ttft_mean=2.0 * s, ttft_p90=3.0 * s, itl_mean=0.05 * s,
                     tpot_mean=0.05 * s, tpot_p90=0.08 * s, first_tokens=int(10 * s), finished=int(10 * s),
                     waiting=int(50 * s), running=int(20 * s), queued_prefill_tokens=int(50_000 * s),
                     kv_usage_mean=min(0.3 * s, 1.0), load=0.5 * s)
    inst = tuple(InstanceWindowStats(i, r, ttft_mean=2.0 * s, itl_mean=0.05 * s, busy_fraction=min(s, 1.0),
                                     waiting=int(5 * s), running=int(3 * s), kv_usage=min(0.3 * s, 1.0),
                                     prefill_load=0.5 * s, decode_load=0.5 * s) for i, r in enumerate(roles))
    fields = dict(arrivals=int(10 * s), arrival_input_tokens_mean=1000.0 * s, arrival_input_tokens_p90=2000.0 * s,
                  finished_output_tokens_mean=200.0 * s, finished=int(10 * s), finished_within_slo=int(5 * s),
                  ttft_violations=int(3 * s), tpot_violations=int(3 * s), rejected=0,
                  pending_predicted_ttft_misses=int(20 * s))
    fields.update(extra)
    return MetricsWindow(start, end, pool, pool, inst, **fields)


ROLES = [Role.PREFILL] * 4 + [Role.DECODE] * 4


def state(t, scale, roles=ROLES, **kw):
    return ControlState(t, window(t - 1.0, t, roles, scale), views(roles, **kw))


def test_feature_names_are_unique_and_documented():
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert all(f.doc and f.low < f.high for f in OBSERVATION_FEATURES)


def test_vector_length_is_features_times_history():
    b = ObservationBuilder(SLO_, 8, ObservationConfig(history=3))
    obs = b.build(state(1.0, 1.0))
    assert obs.shape == (3 * len(FEATURE_NAMES),) == b.observation_space.shape
    assert obs.dtype == np.float32
    assert len(b.feature_names) == obs.size


@pytest.mark.parametrize("scale", [0.0, 1.0, 100.0, 1e6])
def test_observation_stays_in_bounds_from_idle_to_extreme_overload(scale):
    b = ObservationBuilder(SLO_, 8, ObservationConfig(history=2, history_mode="delta"))
    for t in range(1, 4):
        obs = b.build(state(float(t), scale * t, prefill_tokens=int(1e7 * scale), decode_tokens=int(1e6 * scale),
                            kv_used=int(1e5 * min(scale, 1)), num_prefill=int(100 * scale)))
        assert b.observation_space.contains(obs), obs
        assert np.all(np.isfinite(obs))


def test_nan_and_inf_metrics_do_not_leak_into_the_observation():
    roles = ROLES
    w = window(0.0, 1.0, roles, 1.0, arrival_input_tokens_mean=math.nan, arrival_input_tokens_p90=math.inf)
    v = frame_features(ControlState(1.0, w, views(roles)), SLO_, ObservationConfig(), 8, 8, 0.0)
    assert np.all(np.isfinite(v))


def test_latency_features_are_relative_to_the_slo():
    i = FEATURE_NAMES.index("prefill_ttft_mean_slo")
    j = FEATURE_NAMES.index("decode_itl_mean_slo")
    st = state(1.0, 1.0)  # ttft_mean 2.0 s, itl 0.05 s
    tight = frame_features(st, SLO(1.0, 0.05), ObservationConfig(), 8, 8, 0.0)
    loose = frame_features(st, SLO(4.0, 0.2), ObservationConfig(), 8, 8, 0.0)
    assert tight[i] == pytest.approx(2.0) and loose[i] == pytest.approx(0.5)
    assert tight[j] == pytest.approx(1.0) and loose[j] == pytest.approx(0.25)


def test_queue_features_are_per_instance_so_cluster_size_cancels():
    """Doubling the cluster and every count leaves the per-instance queue features unchanged."""
    k = [FEATURE_NAMES.index(n) for n in ("prefill_waiting", "decode_waiting", "arrival_rate", "prefill_fraction")]
    small_roles = [Role.PREFILL] * 2 + [Role.DECODE] * 2
    big_roles = [Role.PREFILL] * 4 + [Role.DECODE] * 4
    small = window(0.0, 1.0, small_roles, 1.0)
    big = window(0.0, 1.0, big_roles, 2.0)
    # only counts double in `big` (latencies also scale in the helper, so compare count features only)
    a = frame_features(ControlState(1.0, small, views(small_roles)), SLO_, ObservationConfig(), 4, 8, 0.0)
    b = frame_features(ControlState(1.0, big, views(big_roles)), SLO_, ObservationConfig(), 8, 8, 0.0)
    assert np.allclose(a[k], b[k])


def test_split_fraction_and_pool_guards_follow_the_roles():
    roles = [Role.PREFILL] + [Role.DECODE] * 7
    v = frame_features(ControlState(1.0, window(0.0, 1.0, roles), views(roles)), SLO_, ObservationConfig(), 8, 8, 0.0)
    assert v[FEATURE_NAMES.index("prefill_fraction")] == pytest.approx(1 / 8)
    assert v[FEATURE_NAMES.index("can_move_to_decode")] == 0.0  # Alg. 3: never empty the prefill pool
    assert v[FEATURE_NAMES.index("can_move_to_prefill")] == 1.0


def test_time_since_flip_resets_when_roles_change():
    b = ObservationBuilder(SLO_, 8, ObservationConfig(history=1, flip_age_scale_s=10.0))
    idx = FEATURE_NAMES.index("time_since_flip")
    for t in range(1, 6):
        obs = b.build(state(float(t), 0.5))
    assert obs[idx] == pytest.approx(0.5)  # 5 s since the start of the first window (t=0)
    flipped = [Role.PREFILL] * 3 + [Role.DECODE] * 5
    obs = b.build(state(6.0, 0.5, roles=flipped))
    assert obs[idx] == pytest.approx(0.1)  # flip applied at the window start (5 s), observed at 6 s


def test_stack_history_shifts_frames_and_pads_with_the_first():
    b = ObservationBuilder(SLO_, 8, ObservationConfig(history=3))
    f = len(FEATURE_NAMES)
    o1 = b.build(state(1.0, 0.2))
    assert np.array_equal(o1[:f], o1[f:2 * f]) and np.array_equal(o1[:f], o1[2 * f:])
    o2 = b.build(state(2.0, 0.4))
    assert np.array_equal(o2[f:2 * f], o1[:f])
    assert not np.array_equal(o2[:f], o1[:f])


def test_delta_history_holds_differences():
    b = ObservationBuilder(SLO_, 8, ObservationConfig(history=2, history_mode="delta"))
    f = len(FEATURE_NAMES)
    o1 = b.build(state(1.0, 0.2))
    assert np.all(o1[f:] == 0)
    o2 = b.build(state(2.0, 0.4))
    assert np.allclose(o2[f:], o2[:f] - o1[:f], atol=1e-6)


def test_each_build_returns_a_fresh_array():
    b = ObservationBuilder(SLO_, 8)
    o1 = b.build(state(1.0, 0.2))
    o2 = b.build(state(2.0, 0.2))
    assert o1 is not o2 and not np.shares_memory(o1, o2)


def test_per_instance_dict_pads_to_max_instances():
    b = ObservationBuilder(SLO_, 8, ObservationConfig(per_instance=True, max_instances=12))
    obs = b.build(state(1.0, 3.0, prefill_tokens=10**6))
    assert b.observation_space.contains(obs)
    inst = obs["instances"]
    assert inst.shape[0] == 12
    assert np.all(inst[:8, 0] == 1.0) and np.all(inst[8:] == 0.0)
    assert np.array_equal(inst[:8, 1], [1, 1, 1, 1, 0, 0, 0, 0])


def test_builder_imports_without_the_emulator_or_gymnasium_env():
    """A deployed controller builds observations without pulling in the emulator."""
    import subprocess
    import sys

    code = ("import sys, envs.observation; "
            "print(any(m.startswith('arrow_rl.cluster.emulator') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_every_feature_is_documented_in_the_environment_guide():
    from pathlib import Path

    from envs.observation import INSTANCE_FEATURE_NAMES

    doc = (Path(__file__).resolve().parents[1] / "docs" / "environment.md").read_text(encoding="utf-8")
    missing = [n for n in FEATURE_NAMES + INSTANCE_FEATURE_NAMES if f"`{n}`" not in doc]
    assert not missing, f"features missing from docs/environment.md: {missing}"


def test_the_prefix_cache_hit_rate_is_an_optional_last_feature():
    off = ObservationBuilder(SLO_, 8, ObservationConfig(history=2))
    on = ObservationBuilder(SLO_, 8, ObservationConfig(history=2, prefix_cache=True))
    w = window(0.0, 1.0, ROLES, 1.0, prefix_cache_query_tokens=1000, prefix_cache_hit_tokens=250)
    s = ControlState(1.0, w, views(ROLES))
    a, b = off.build(s), on.build(s)
    n = len(FEATURE_NAMES)
    assert a.shape == (2 * n,) and b.shape == (2 * (n + 1),) == on.observation_space.shape
    assert on.feature_names[n] == "prefix_cache_hit_rate" and b[n] == pytest.approx(0.25)
    np.testing.assert_array_equal(b[:n], a[:n])
    assert on.observation_space.contains(b)


def _digest_of_builds(builder, states) -> str:
    import hashlib

    h = hashlib.sha256()
    for s in states:
        obs = builder.build(s)
        for part in (obs.values() if isinstance(obs, dict) else [obs]):
            h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()[:24]


def _pinned_states(roles):
    """A run of states from idle to overload, one with NaN/inf metrics, and a role change."""
    out = [state(float(t), scale, roles, prefill_tokens=300 * t, decode_tokens=900 * t, num_prefill=t % 3,
                 num_decode=t % 2) for t, scale in enumerate([0.0, 0.3, 1.0, 2.5, 7.0, 40.0], start=1)]
    out.append(ControlState(7.0, window(6.0, 7.0, roles, 1.0, arrival_input_tokens_mean=float("nan"),
                                        finished_output_tokens_mean=float("inf")), views(roles)))
    flipped = [Role.DECODE, *roles[1:]]
    out.append(ControlState(8.0, window(7.0, 8.0, flipped, 2.0), views(flipped, prefill_tokens=5000)))
    return out


@pytest.mark.parametrize("config, want", [
    (dict(history=4), "d42d3d20d73316e38cd6f468"),
    (dict(history=3, history_mode="delta", per_instance=True, max_instances=10), "1a22b68bf9641fb17d1b8c55"),
    (dict(history=2, prefix_cache=True), "ca3e30bbd63bfe757c44cba5"),
])
def test_cluster_observation_vectors_are_pinned_bit_for_bit(config, want):
    """Shipped checkpoints read these vectors: any change of any bit must be deliberate."""
    assert _digest_of_builds(ObservationBuilder(SLO_, 8, ObservationConfig(**config)), _pinned_states(ROLES)) == want


@pytest.mark.parametrize("config, want", [
    (dict(kind="pools", history=4), "ccff01d589596dba18b1a984"),
    (dict(kind="pools", history=2, history_mode="delta", load_features="capacity"), "a2e6a76a0a4ec1a23b5872e3"),
    (dict(kind="pools", history=4, memory=False), "ccff01d589596dba18b1a984"),   # memory off: as before
    (dict(kind="pools", history=4, memory=True), "c634f0a8e9df2583efc6c419"),
    (dict(kind="pools", history=2, history_mode="delta", load_features="capacity", memory=True,
          memory_time_constants_s=(5.0, 120.0)), "4109732d8da4902816cffa87"),
])
def test_pool_observation_vectors_are_pinned_bit_for_bit(config, want):
    from arrow_rl.perf.presets import get_preset
    from arrow_rl.perf.profile import profile_instance
    from envs.pool_observation import PoolObservationBuilder

    roles = [Role.PREFILL] * 3 + [Role.DECODE] * 3 + [Role.MIXED] * 2
    builder = PoolObservationBuilder(SLO_, 8, ObservationConfig(**config),
                                     profile=profile_instance(get_preset("h100-llama3.1-8b-tp1")))
    assert _digest_of_builds(builder, _pinned_states(roles)) == want
