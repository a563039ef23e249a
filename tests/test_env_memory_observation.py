"""The pools observation's memory block (``observation.memory``, envs/memory_features.py): EWMA math,
size-free shape and bounds, leading signals, the default left as it was, and what a live router gives."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from arrow_rl.cluster.base import SLO, InstanceView, InstanceWindowStats, MetricsWindow, PoolStats, Role
from arrow_rl.control import ControlState
from arrow_rl.perf.profile import InstanceProfile
from envs.config import EnvConfig, ObservationConfig
from envs.memory_features import SIGNAL_FEATURES, EwmaBank, memory_features
from envs.offered_load import offered_load_of
from envs.pool_observation import POOL_FEATURE_NAMES, PoolObservationBuilder

SLO_ = SLO(2.0, 0.1)
MEMORY = ObservationConfig(kind="pools", history=4, memory=True)
PROFILE = InstanceProfile(prefill_a=1e-8, prefill_b=5e-5, prefill_c=0.01, decode_slope=1e-7, decode_intercept=0.025)


def roles_of(n: int) -> list[Role]:
    return [Role.PREFILL] * (n // 2) + [Role.DECODE] * (n - n // 2)


def views(roles, prefill_tokens=0, kv_used=0, healthy=None):
    return [InstanceView(i, r, 1 if prefill_tokens else 0, prefill_tokens, float(prefill_tokens) ** 2, 0, 0, kv_used,
                         100_000, True if healthy is None else healthy[i]) for i, r in enumerate(roles)]


def window(start, end, roles, arrivals=0, prompt=0.0, p90=0.0, finished=0, output=0.0, kv=None):
    inst = tuple(InstanceWindowStats(i, r, kv_usage=(kv[i] if kv else 0.0)) for i, r in enumerate(roles))
    return MetricsWindow(start, end, PoolStats(), PoolStats(), inst, arrivals=arrivals, arrival_input_tokens_mean=prompt,
                         arrival_input_tokens_p90=p90, finished=finished, finished_output_tokens_mean=output)


def state(t, roles, dt=1.0, views_kw=None, **w):
    return ControlState(t, window(t - dt, t, roles, **w), views(roles, **(views_kw or {})))


def block(builder: PoolObservationBuilder, obs: np.ndarray) -> dict[str, float]:
    """The memory block of ``obs`` by feature name."""
    names = builder.feature_names
    k = len(memory_features(builder.config))
    return dict(zip(names[-k:], obs[-k:].tolist()))


# ---- the default is untouched ----------------------------------------------------------------------

def test_memory_is_off_by_default_and_adds_nothing():
    assert ObservationConfig().memory is False and memory_features(ObservationConfig(kind="pools")) == ()
    off = PoolObservationBuilder(SLO_, 8, ObservationConfig(kind="pools"))
    assert off.feature_names == [f"{n}@t-{k}" if k else n for k in range(4) for n in POOL_FEATURE_NAMES]
    assert off.observation_space.shape == (4 * len(POOL_FEATURE_NAMES),)


def test_memory_on_keeps_the_frames_and_appends_one_block():
    off = PoolObservationBuilder(SLO_, 8, ObservationConfig(kind="pools"))
    on = PoolObservationBuilder(SLO_, 8, MEMORY)
    k = len(memory_features(MEMORY))
    assert k == 3 * 6 + len(SIGNAL_FEATURES)
    for t in range(1, 6):
        s = state(float(t), roles_of(8), arrivals=3 * t, prompt=500.0, p90=900.0, finished=t, output=100.0)
        a, b = off.build(s), on.build(s)
        np.testing.assert_array_equal(b[:-k], a)
    assert b.shape == on.observation_space.shape == (a.size + k,) and len(on.feature_names) == b.size
    assert on.feature_names[-k:][:2] == ["arrival_rate_ewma10s", "arrival_prompt_rate_ewma10s"]


# ---- EWMA math --------------------------------------------------------------------------------------

def _closed_form(amounts, dts, tau):
    """Σ w_i (a_i / dt_i) / Σ w_i with w_i = exp(−age_i/τ)(1 − exp(−dt_i/τ)), age from each window's end."""
    ends = np.cumsum(dts)
    w = np.exp(-(ends[-1] - ends) / tau) * (1 - np.exp(-np.asarray(dts) / tau))
    return float(np.sum(w * np.asarray(amounts) / np.asarray(dts)) / np.sum(w))


def test_ewma_is_the_exponentially_weighted_mean_of_the_window_rates():
    rng = np.random.default_rng(0)
    amounts, dts = rng.integers(0, 40, 50).astype(float), rng.uniform(0.5, 2.0, 50)
    bank = EwmaBank(1, (10.0, 60.0, 300.0))
    for i, (a, dt) in enumerate(zip(amounts, dts)):
        bank.update([a], dt)
        for j, tau in enumerate((10.0, 60.0, 300.0)):
            assert bank.rates()[0, j] == pytest.approx(_closed_form(amounts[:i + 1], dts[:i + 1], tau), rel=1e-12)


def test_ewma_reads_a_steady_rate_from_the_first_window_and_follows_a_step_with_its_time_constant():
    bank = EwmaBank(1, (10.0, 300.0))
    bank.update([5.0], 1.0)
    assert bank.rates()[0].tolist() == pytest.approx([5.0, 5.0])   # bias-corrected: no decay from 0
    for _ in range(2999):
        bank.update([5.0], 1.0)
    for _ in range(10):   # a step to 15/s for one 10 s time constant
        bank.update([15.0], 1.0)
    fast, slow = bank.rates()[0]
    assert fast == pytest.approx(15.0 - 10.0 * math.exp(-1.0), rel=1e-9)
    assert slow == pytest.approx(15.0 - 10.0 * math.exp(-10 / 300), rel=1e-4)   # 3000 s is 10 τ, not ∞


def test_ewma_ignores_empty_windows_and_counts_non_finite_amounts_as_zero():
    bank = EwmaBank(2, (10.0,))
    assert bank.rates().tolist() == [[0.0], [0.0]]
    bank.update([4.0, float("nan")], 0.0)
    assert bank.rates().tolist() == [[0.0], [0.0]]
    bank.update([4.0, float("nan")], 2.0)
    assert bank.rates()[:, 0].tolist() == [2.0, 0.0]


def test_builder_rates_and_lengths_are_per_instance_and_arrival_weighted():
    n = 8
    b = PoolObservationBuilder(SLO_, n, MEMORY)
    b.build(state(1.0, roles_of(n), arrivals=10, prompt=1000.0, p90=2000.0, finished=4, output=100.0))
    m = block(b, b.build(state(2.0, roles_of(n), arrivals=30, prompt=200.0, p90=400.0, finished=0, output=0.0)))
    tau = 10.0
    rate = _closed_form([10, 30], [1.0, 1.0], tau)
    prompt_rate = _closed_form([10_000, 6_000], [1.0, 1.0], tau)
    assert m["arrival_rate_ewma10s"] == pytest.approx(math.log1p(rate / n), rel=1e-6)
    assert m["arrival_prompt_rate_ewma10s"] == pytest.approx(math.log1p(prompt_rate / n / 2048.0), rel=1e-6)
    log_tokens = lambda x: math.log1p(x) / math.log1p(32768.0)  # noqa: E731
    assert m["prompt_mean_ewma10s"] == pytest.approx(log_tokens(prompt_rate / rate), rel=1e-6)
    assert m["prompt_p90_ewma10s"] == pytest.approx(log_tokens(_closed_form([20_000, 12_000], [1, 1], tau) / rate), rel=1e-6)
    # output lengths are known only at finish: the one finished batch's length, held while nothing finishes
    assert m["output_mean_ewma10s"] == pytest.approx(log_tokens(100.0), rel=1e-6)
    out_rate = _closed_form([400.0, 0.0], [1.0, 1.0], tau)
    assert m["output_token_rate_ewma10s"] == pytest.approx(math.log1p(out_rate / n / 2048.0), rel=1e-6)


def test_reset_clears_the_memory_and_the_block_is_deterministic():
    b = PoolObservationBuilder(SLO_, 8, MEMORY)
    run = [state(float(t), roles_of(8), arrivals=5 * t, prompt=300.0 * t, p90=600.0 * t, finished=t, output=50.0)
           for t in range(1, 8)]
    first = [b.build(s) for s in run]
    b.reset()
    again = [b.build(s) for s in run]
    fresh = PoolObservationBuilder(SLO_, 8, MEMORY)
    assert all(np.array_equal(x, y) and np.array_equal(x, fresh.build(s)) for x, y, s in zip(first, again, run))


# ---- size-free shape and bounds ---------------------------------------------------------------------

@pytest.mark.parametrize("load_features", ["raw", "capacity"])
def test_same_length_and_within_bounds_for_4_8_16_instances_from_idle_to_overload(load_features):
    cfg = ObservationConfig(kind="pools", memory=True, load_features=load_features)
    shapes = set()
    for n in (4, 8, 16):
        b = PoolObservationBuilder(SLO_, n, cfg, profile=PROFILE)
        roles = roles_of(n)
        for t, scale in enumerate([0.0, 0.1, 1.0, 10.0, 1e3, 1e6], start=1):
            s = ControlState(float(t), window(t - 1.0, float(t), roles, arrivals=int(20 * n * scale),
                                              prompt=4000.0 * scale, p90=9000.0 * scale, finished=int(10 * n * scale),
                                              output=500.0 * scale, kv=[min(0.9 * scale, 1.0)] * n),
                             views(roles, prefill_tokens=int(5000 * scale), healthy=[t % 2 == 0] * n))
            obs = b.build(s)
            shapes.add(obs.shape)
            assert obs.dtype == np.float32 and b.observation_space.contains(obs), (n, scale)
        nan = ControlState(9.0, window(8.0, 9.0, roles, arrivals=5, prompt=float("nan"), p90=float("inf"),
                                       finished=3, output=float("nan")), views(roles))
        assert b.observation_space.contains(b.build(nan))
    assert len(shapes) == 1


def test_a_steady_load_per_instance_reads_the_same_on_every_cluster_size():
    blocks = []
    for n in (4, 8, 16):
        b = PoolObservationBuilder(SLO_, n, MEMORY)
        for t in range(1, 30):
            obs = b.build(state(float(t), roles_of(n), arrivals=2 * n, prompt=800.0, p90=1500.0, finished=n, output=200.0,
                                views_kw={"prefill_tokens": 3000}))
        m = block(b, obs)
        blocks.append(list(m.values()))
    np.testing.assert_allclose(blocks[0], blocks[1], rtol=1e-6)
    np.testing.assert_allclose(blocks[0], blocks[2], rtol=1e-6)


def test_capacity_rates_are_offered_load_of_the_averaged_rates():
    cfg = ObservationConfig(kind="pools", memory=True, load_features="capacity", memory_time_constants_s=(30.0,))
    n = 6
    b = PoolObservationBuilder(SLO_, n, cfg, profile=PROFILE)
    for t in range(1, 5):
        obs = b.build(state(float(t), roles_of(n), arrivals=12, prompt=1000.0, p90=2000.0, finished=6, output=300.0))
    m = block(b, obs)
    p, d = offered_load_of(2.0, 1000.0, 300.0, SLO_, PROFILE, 100_000)
    _, served = offered_load_of(1.0, 1000.0, 300.0, SLO_, PROFILE, 100_000)
    assert [m["offered_prefill_ewma30s"], m["offered_decode_ewma30s"], m["served_decode_ewma30s"]] == \
        pytest.approx([p, min(d, 4.0), min(served, 4.0)], rel=1e-5)


# ---- leading signals --------------------------------------------------------------------------------

def test_queued_prompt_tokens_are_per_instance_that_takes_prompts_and_decode_kv_is_the_peak():
    roles = [Role.PREFILL, Role.PREFILL, Role.MIXED, Role.DECODE, Role.DECODE, Role.DECODE]
    b = PoolObservationBuilder(SLO_, 6, MEMORY)
    s = ControlState(1.0, window(0.0, 1.0, roles, kv=[0.9, 0.9, 0.95, 0.2, 0.7, 0.4]),
                     views(roles, prefill_tokens=2048))
    m = block(b, b.build(s))
    assert m["queued_prefill_tokens"] == pytest.approx(math.log1p(6 * 2048 / (3 * 2048)))
    assert m["decode_kv_usage_max"] == pytest.approx(0.7)


def test_flip_signals_count_blocked_instances_recent_relabels_and_the_long_flip_age():
    cfg = ObservationConfig(kind="pools", memory=True, flip_age_scale_s=10.0, memory_time_constants_s=(10.0, 100.0))
    b = PoolObservationBuilder(SLO_, 4, cfg)
    before = [Role.PREFILL, Role.PREFILL, Role.DECODE, Role.DECODE]
    after = [Role.PREFILL, Role.DECODE, Role.DECODE, Role.DECODE]
    m = block(b, b.build(state(1.0, before)))
    assert (m["flips_in_flight"], m["recent_flip_fraction"]) == (0.0, 0.0)
    flipped = ControlState(2.0, window(1.0, 2.0, after), views(after, healthy=[True, False, True, True]))
    m = block(b, b.build(flipped))
    assert m["flips_in_flight"] == 0.25 and m["recent_flip_fraction"] == 0.25
    assert m["time_since_flip_long"] == pytest.approx(1.0 / 100.0)   # dated at the window start
    for t in range(3, 13):
        m = block(b, b.build(state(float(t), after)))
    assert m["recent_flip_fraction"] == 0.0 and m["flips_in_flight"] == 0.0   # older than flip_age_scale_s
    assert m["time_since_flip_long"] == pytest.approx(11.0 / 100.0)


# ---- config, env, docs ------------------------------------------------------------------------------

def test_config_refuses_memory_on_the_cluster_encoding_and_repeated_time_constants():
    with pytest.raises(ValueError, match="observation.memory needs observation.kind 'pools'"):
        EnvConfig(observation={"kind": "cluster", "memory": True})
    with pytest.raises(ValueError, match="distinct"):
        ObservationConfig(kind="pools", memory=True, memory_time_constants_s=(10.0, 10.0))
    with pytest.raises(ValueError, match="positive"):
        ObservationConfig(kind="pools", memory=True, memory_time_constants_s=(0.0,))


def test_the_env_with_memory_runs_an_episode_on_every_size_with_one_box():
    from gymnasium import spaces

    from envs import PDClusterEnv

    base = {"action": {"kind": "moves"}, "observation": {"kind": "pools", "memory": True},
            "preset": "h100-llama3.1-70b-tp4", "slo_ttft_s": 10.0, "slo_tpot_s": 0.125, "teacher": None,
            "episode": {"traces": ["azure-code"], "duration_s": 12, "drain_s": 3, "rate_scale": [6.0, 6.0]}}
    shapes = set()
    for n in (4, 8, 16):
        env = PDClusterEnv({**base, "num_instances": n})
        space = env.observation_space
        assert isinstance(space, spaces.Box) and space.dtype == np.float32 and len(space.shape) == 1
        assert np.isfinite(space.low).all() and np.isfinite(space.high).all()
        obs, _ = env.reset(seed=n)
        steps = 0
        while True:
            assert space.contains(obs)
            obs, _r, term, trunc, _info = env.step(steps % 3)
            steps += 1
            if term or trunc:
                break
        assert space.contains(obs) and steps > 3
        shapes.add(space.shape)
    assert len(shapes) == 1


def test_every_memory_feature_is_documented_in_the_environment_guide():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "environment.md").read_text(encoding="utf-8")
    names = {f.name.replace("ewma10s", "ewma{τ}s") for f in memory_features(
        ObservationConfig(kind="pools", memory=True, memory_time_constants_s=(10.0,)))}
    names |= {f.name.replace("ewma10s", "ewma{τ}s") for f in memory_features(
        ObservationConfig(kind="pools", memory=True, load_features="capacity", memory_time_constants_s=(10.0,)))}
    missing = sorted(n for n in names if f"`{n}`" not in doc)
    assert not missing, f"memory features missing from docs/environment.md: {missing}"
    assert "`observation.memory`" in doc and "`observation.memory_time_constants_s`" in doc


# ---- what a live router gives -----------------------------------------------------------------------

class _FakeAdmin:
    """A router's admin API with canned /state and /events: one window's arrivals and finishes."""

    def __init__(self, healthy: list[bool]) -> None:
        self.healthy = healthy
        self.served = False

    def state(self) -> dict:
        roles = ["prefill", "prefill", "decode", "decode"]
        return {"now": 0.0, "slo": {"ttft_s": 2.0, "tpot_s": 0.1}, "routing": "arrow", "last_seq": 0,
                "instances": [{"instance_id": i, "role": r, "url": f"http://i{i}", "num_prefill": 1 if r == "prefill" else 0,
                               "prefill_tokens": 3000 if r == "prefill" else 0, "prefill_tokens_sq": 9e6 if r == "prefill" else 0.0,
                               "num_decode": 2 if r == "decode" else 0, "decode_tokens": 4000 if r == "decode" else 0,
                               "kv_used_tokens": 20_000 * (i + 1), "kv_capacity_tokens": 100_000,
                               "healthy": self.healthy[i], "itl_sum_s": 0.0, "itl_count": 0, "decode_tokens_out": 0,
                               "prefill_tokens_done": 0, "busy_s": 0.0} for i, r in enumerate(roles)]}

    def events(self, after: int) -> dict:
        if self.served:
            return {"events": [], "last_seq": 3}
        self.served = True
        finish = {"kind": "finish", "status": 200, "request_id": 7, "arrival_s": 0.0, "input_tokens": 500,
                  "output_tokens": 40, "prefill_instance": 0, "decode_instance": 2, "first_token_s": 0.0,
                  "finish_s": 0.0, "error": None}
        return {"events": [{"kind": "arrival", "input_tokens": 100}, {"kind": "arrival", "input_tokens": 900}, finish],
                "last_seq": 3}

    def close(self) -> None:
        pass


def test_live_cluster_fills_every_field_the_memory_reads():
    """LiveCluster builds the window the memory reads from the router alone (no scrape): arrivals and
    their prompt mean/p90, finished output tokens, the instances' prompt backlog and KV use from the
    router's view. The router has no flip delay: ``healthy`` is its health check, so on a live cluster
    ``flips_in_flight`` reads instances it cannot route to."""
    from arrow_rl.cluster.live.cluster import LiveCluster

    cl = LiveCluster("http://router", "t", scrape=False, admin=_FakeAdmin([True, True, False, True]))
    w = cl.collect()
    vs = cl.instances()
    assert (w.arrivals, w.arrival_input_tokens_mean, w.finished, w.finished_output_tokens_mean) == (2, 500.0, 1, 40.0)
    assert w.arrival_input_tokens_p90 == pytest.approx(820.0)
    assert [s.kv_usage for s in w.instances] == [0.2, 0.4, 0.6, 0.8]
    b = PoolObservationBuilder(cl.info.slo, 4, MEMORY)
    m = block(b, b.build(ControlState(cl.now, w, vs)))
    log_tokens = lambda x: math.log1p(x) / math.log1p(32768.0)  # noqa: E731
    assert m["prompt_mean_ewma10s"] == pytest.approx(log_tokens(500.0), rel=1e-6)
    assert m["prompt_p90_ewma10s"] == pytest.approx(log_tokens(820.0), rel=1e-6)
    assert m["output_mean_ewma10s"] == pytest.approx(log_tokens(40.0), rel=1e-6)
    assert m["queued_prefill_tokens"] == pytest.approx(math.log1p(6000 / (2 * 2048)), rel=1e-6)
    assert m["decode_kv_usage_max"] == pytest.approx(0.8)
    assert m["flips_in_flight"] == 0.25


def test_a_memory_checkpoint_trains_on_the_box_and_deploys_with_the_same_observation(tmp_path):
    """MaskablePPO takes the Box as it is, and a checkpoint's controller rebuilds the memory block from
    the ControlStates alone: the same vector the env gave the policy, step for step (no training)."""
    from sb3_contrib import MaskablePPO

    from agents import load_controller
    from agents.checkpoint import save_checkpoint
    from agents.config import load_config
    from agents.train import checkpoint_metadata
    from envs import PDClusterEnv

    root = Path(__file__).resolve().parents[1]
    meta = checkpoint_metadata(load_config(root / "configs" / "train" / "generalist_split_wide_memory.yaml"))
    env_cfg = {**meta["env_config"], "teacher": None, "distribution": None, "num_instances": 6,
               "episode": {"traces": ["azure-code"], "duration_s": 8, "drain_s": 2, "rate_scale": [6.0, 6.0]}}
    env = PDClusterEnv(env_cfg)
    model = MaskablePPO("MlpPolicy", env, n_steps=16, batch_size=16, seed=0, policy_kwargs={"net_arch": [8]})
    save_checkpoint(tmp_path / "ckpt", model, meta)
    controller = load_controller(tmp_path / "ckpt")
    obs, _ = env.reset(seed=3)
    controller.reset(env.cluster.info)
    for _ in range(6):
        seen, _mask = controller.observe(env.control_state)
        np.testing.assert_array_equal(seen, obs)
        obs, _r, term, trunc, _i = env.step(0)
        if term or trunc:
            break
    assert obs.shape == (4 * len(POOL_FEATURE_NAMES) + 23,)
