"""Synthetic generators: deterministic for a seed, statistically on target, specs validated."""

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from arrow_rl.workload import generate, load_spec, load_workload, parse_spec, summarize
from arrow_rl.workload.generators import (
    DECODE_HEAVY,
    PREFILL_HEAVY,
    EmpiricalLength,
    FixedLength,
    LognormalLength,
    sample_lengths,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "workloads"

SPECS = {
    "poisson": {"kind": "poisson", "rate": 5, "duration_s": 200},
    "gamma": {"kind": "gamma", "rate": 5, "cv": 2.5, "duration_s": 200},
    "mmpp": {"kind": "mmpp", "rates": [1, 15], "mean_dwell_s": [20, 5], "duration_s": 200},
    "stages": {"kind": "stages", "stages": [[2, 50], [10, 50], [4, 50]]},
    "phase_shift": {"kind": "phase_shift", "rate": 5, "duration_s": 200, "phase_s": 50},
}


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_same_seed_same_workload(kind):
    a, b = generate(SPECS[kind], seed=7), generate(SPECS[kind], seed=7)
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    np.testing.assert_array_equal(a.input_tokens, b.input_tokens)
    np.testing.assert_array_equal(a.output_tokens, b.output_tokens)


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_different_seed_different_workload(kind):
    a, b = generate(SPECS[kind], seed=1), generate(SPECS[kind], seed=2)
    assert len(a) != len(b) or not np.array_equal(a.arrival_s, b.arrival_s)


def test_changing_only_the_length_mix_keeps_arrival_times():
    base = dict(SPECS["poisson"])
    other = dict(base, mix={"input": {"kind": "fixed", "tokens": 7}, "output": {"kind": "fixed", "tokens": 3}})
    a, b = generate(base, seed=3), generate(other, seed=3)
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    assert set(b.input_tokens.tolist()) == {7} and set(b.output_tokens.tolist()) == {3}


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_arrivals_stay_inside_the_duration(kind):
    w = generate(SPECS[kind], seed=0)
    horizon = SPECS[kind].get("duration_s", 150)
    assert len(w) > 0 and w.arrival_s.min() >= 0 and w.arrival_s.max() < horizon


def test_poisson_rate_and_cv_near_target():
    s = summarize(generate({"kind": "poisson", "rate": 20, "duration_s": 1000}, seed=0))
    assert s.rows == pytest.approx(20_000, rel=0.03)
    assert s.interarrival_cv == pytest.approx(1.0, abs=0.03)
    assert s.dispersion_1s == pytest.approx(1.0, abs=0.1)


def test_gamma_hits_target_rate_and_interarrival_cv():
    s = summarize(generate({"kind": "gamma", "rate": 10, "cv": 3.0, "duration_s": 5000}, seed=0))
    assert s.rows / 5000 == pytest.approx(10, rel=0.05)
    assert s.interarrival_cv == pytest.approx(3.0, rel=0.1)


def test_gamma_below_one_cv_is_more_regular_than_poisson():
    s = summarize(generate({"kind": "gamma", "rate": 10, "cv": 0.3, "duration_s": 1000}, seed=0))
    assert s.interarrival_cv == pytest.approx(0.3, rel=0.1)
    assert s.dispersion_1s < 0.5


def test_mmpp_mean_rate_is_the_dwell_weighted_rate_and_it_is_bursty():
    spec = parse_spec({"kind": "mmpp", "rates": [2, 20], "mean_dwell_s": [10, 5], "duration_s": 20_000})
    assert spec.mean_rate == pytest.approx(8.0)
    s = summarize(generate(spec, seed=0))
    assert s.rows / 20_000 == pytest.approx(8.0, rel=0.05)
    assert s.dispersion_1s > 5  # modulation makes per-second counts far more variable than Poisson


def test_stages_follow_the_rate_schedule():
    stages = [[2, 500], [20, 500], [5, 500]]
    w = generate({"kind": "stages", "stages": stages}, seed=0)
    start = 0.0
    for rate, duration in stages:
        n = int(((w.arrival_s >= start) & (w.arrival_s < start + duration)).sum())
        assert n / duration == pytest.approx(rate, rel=0.12)
        start += duration


def test_stage_with_zero_rate_is_silent():
    w = generate({"kind": "stages", "stages": [[5, 10], [0, 10], [5, 10]]}, seed=0)
    assert not ((w.arrival_s >= 10) & (w.arrival_s < 20)).any()


def test_stage_mix_override_applies_only_to_its_stage():
    fixed = {"input": {"kind": "fixed", "tokens": 11}, "output": {"kind": "fixed", "tokens": 22}}
    w = generate({"kind": "stages", "stages": [{"rate": 5, "duration_s": 20},
                                               {"rate": 5, "duration_s": 20, "mix": fixed}]}, seed=0)
    late = w.arrival_s >= 20
    assert set(w.input_tokens[late].tolist()) == {11}
    assert len(set(w.input_tokens[~late].tolist())) > 1


def test_phase_shift_alternates_prefill_heavy_and_decode_heavy():
    w = generate({"kind": "phase_shift", "rate": 10, "duration_s": 400, "phase_s": 100}, seed=0)
    phase = (w.arrival_s // 100).astype(int) % 2
    pre, dec = phase == 0, phase == 1
    # Prefill-heavy phases: long prompts, short outputs; decode-heavy: the reverse.
    assert w.input_tokens[pre].mean() > 5 * w.input_tokens[dec].mean()
    assert w.output_tokens[dec].mean() > 10 * w.output_tokens[pre].mean()
    assert w.input_tokens[pre].mean() == pytest.approx(PREFILL_HEAVY.input.mean, rel=0.1)
    assert w.output_tokens[dec].mean() == pytest.approx(DECODE_HEAVY.output.mean, rel=0.1)


def test_lognormal_lengths_have_the_requested_mean_and_cv():
    x = sample_lengths(np.random.default_rng(0), LognormalLength(mean=1000, cv=0.5), 200_000)
    assert x.mean() == pytest.approx(1000, rel=0.01)
    assert x.std() / x.mean() == pytest.approx(0.5, rel=0.03)


def test_lognormal_lengths_respect_bounds():
    x = sample_lengths(np.random.default_rng(0), LognormalLength(mean=500, cv=2.0, min_tokens=16, max_tokens=2048), 50_000)
    assert x.min() >= 16 and x.max() <= 2048 and x.max() == 2048


def test_fixed_lengths_are_fixed():
    assert set(sample_lengths(np.random.default_rng(0), FixedLength(tokens=128), 100).tolist()) == {128}


def test_empirical_lengths_resample_values_of_the_trace():
    trace = load_workload("azure-code")
    x = sample_lengths(np.random.default_rng(0), EmpiricalLength(trace="azure-code", column="output"), 5000)
    assert set(x.tolist()) <= set(trace.output_tokens.tolist())
    assert x.mean() == pytest.approx(trace.output_tokens.mean(), rel=0.15)


def test_trace_mix_resamples_input_output_pairs_jointly():
    trace = load_workload("azure-conv")
    pairs = set(zip(trace.input_tokens.tolist(), trace.output_tokens.tolist()))
    w = generate({"kind": "poisson", "rate": 20, "duration_s": 50, "mix": {"trace": "azure-conv"}}, seed=0)
    assert set(zip(w.input_tokens.tolist(), w.output_tokens.tolist())) <= pairs


def test_generated_workload_round_trips_through_canonical_csv(tmp_path):
    w = generate(SPECS["mmpp"], seed=5)
    w.to_csv(tmp_path / "g.csv")
    back = load_workload(tmp_path / "g.csv")
    np.testing.assert_allclose(back.arrival_s, w.arrival_s, atol=1e-6)
    np.testing.assert_array_equal(back.input_tokens, w.input_tokens)


def test_stages_accept_compact_pairs_and_mappings_alike():
    a = parse_spec({"kind": "stages", "stages": [[3, 10]]})
    b = parse_spec({"kind": "stages", "stages": [{"rate": 3, "duration_s": 10}]})
    assert a == b


@pytest.mark.parametrize("bad,field", [
    ({"kind": "poisson", "rate": -1, "duration_s": 10}, "rate"),
    ({"kind": "gamma", "rate": 1, "duration_s": 10}, "cv"),
    ({"kind": "mmpp", "rates": [1, 2], "mean_dwell_s": [0, 1], "duration_s": 10}, "mean_dwell_s"),
    ({"kind": "stages", "stages": []}, "stages"),
    ({"kind": "poisson", "rate": 1, "duration_s": 10, "rat": 2}, "rat"),
    ({"kind": "poisson", "rate": 1, "duration_s": 10,
      "mix": {"input": {"kind": "lognormal", "mean": 10, "min_tokens": 9, "max_tokens": 5},
              "output": {"kind": "fixed", "tokens": 1}}}, "max_tokens"),
])
def test_invalid_specs_are_rejected_naming_the_field(bad, field):
    with pytest.raises(ValidationError, match=field):
        parse_spec(bad)


def test_unknown_kind_is_rejected():
    with pytest.raises(ValidationError, match="poisson"):
        parse_spec({"kind": "hawkes", "rate": 1})


def test_yaml_spec_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("kind: stages\nstages: [[1, 10], [2, -1]]\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*\n.*stages\.1\.duration_s"):
        load_spec(path)


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_workload_configs_parse_and_generate(path):
    w = generate(load_spec(path), seed=0)
    assert len(w) > 0


def test_shipped_workload_configs_exist():
    assert len(list(CONFIG_DIR.glob("*.yaml"))) >= 3


def test_mmpp_start_state_picks_the_initial_regime():
    common = {"kind": "mmpp", "rates": [0.0, 10.0], "mean_dwell_s": [1e6, 1e6], "duration_s": 100}
    calm = generate(dict(common, start_state="calm"), seed=0)
    burst = generate(dict(common, start_state="burst"), seed=0)
    assert len(calm) == 0
    assert len(burst) / 100 == pytest.approx(10, rel=0.25)


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_horizon_is_the_arrival_window(kind):
    spec = parse_spec(SPECS[kind])
    expected = 150.0 if kind == "stages" else SPECS[kind]["duration_s"]
    assert spec.horizon_s == expected
    assert generate(spec, seed=0).arrival_s.max() < spec.horizon_s


# ---------------------------------------------------------------------------- prefixes

_BASE = {"kind": "poisson", "rate": 4.0, "duration_s": 120.0,
         "mix": {"input": {"kind": "fixed", "tokens": 470}, "output": {"kind": "fixed", "tokens": 250}}}


def test_shared_prompt_groups_prepend_a_system_prompt_and_keep_arrivals():
    plain = generate(_BASE, seed=3)
    w = generate({**_BASE, "prefixes": {"kind": "shared_prompt", "groups": 11, "prompt_tokens": 100}}, seed=3)
    np.testing.assert_array_equal(w.arrival_s, plain.arrival_s)
    assert (w.input_tokens == 570).all()
    ids = {tuple(w.prefix_ids(k).tolist()) for k in range(len(w))}
    assert len(ids) == 11 and all(len(x) == 6 for x in ids)      # 96 of 100 tokens in full blocks
    again = generate({**_BASE, "prefixes": {"kind": "shared_prompt", "groups": 11, "prompt_tokens": 100}}, seed=3)
    np.testing.assert_array_equal(again.prefix_hashes, w.prefix_hashes)


def test_conversation_turns_extend_the_previous_turn_and_its_answer():
    spec = {**_BASE, "rate": 0.5, "prefixes": {"kind": "conversations", "mean_turns": 4, "think_time_s": 5.0}}
    w = generate(spec, seed=1)
    by_first = {}
    for k in range(len(w)):
        ids = w.prefix_ids(k).tolist()
        by_first.setdefault(ids[0], []).append(k)
    multi = [ks for ks in by_first.values() if len(ks) > 1]
    assert multi, "some conversation has several turns"
    for ks in multi:
        for a, b in zip(ks, ks[1:]):
            ia, ib = w.prefix_ids(a).tolist(), w.prefix_ids(b).tolist()
            assert w.arrival_s[b] >= w.arrival_s[a]
            assert w.input_tokens[b] >= w.input_tokens[a] + w.output_tokens[a]
            assert ib[:len(ia)] == ia            # the history is resent: its blocks hit


def test_conversations_hit_the_prefix_cache_in_the_emulator():
    from arrow_rl.cluster.emulator import EmulatedCluster, EmulatorConfig

    spec = {**_BASE, "rate": 1.0, "duration_s": 60.0,
            "prefixes": {"kind": "conversations", "mean_turns": 3, "think_time_s": 8.0}}
    w = generate(spec, seed=2)
    c = EmulatedCluster(w, EmulatorConfig(preset="h100-llama3.1-8b-tp1", num_instances=2, mode="colocated"))
    c.run_until_done()
    assert all(r.finished for r in c.completed())
    assert c.prefix_cache_hit_rate > 0.3
