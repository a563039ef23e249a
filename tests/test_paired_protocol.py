"""The paired protocol: nested common loads, aligned growth, independent seeds, interpolated
crossings, paired verdicts with Holm, the deployable/oracle split, and the selection rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arrow_rl.cluster.emulator import EmulatorConfig
from arrow_rl.evaluation.crossing import GRID_RATIO, interpolated_crossing, search_crossing
from arrow_rl.evaluation.paired import call_verdicts, geomean_interval, holm, paired_ratio
from arrow_rl.evaluation.protocol import LoadSource, Protocol, build_load
from arrow_rl.evaluation.seeded_search import search_controller
from arrow_rl.workload.generators import parse_spec
from arrow_rl.workload.workload import Workload

MIX = {"input": {"kind": "lognormal", "mean": 800, "cv": 1.0, "max_tokens": 8000},
       "output": {"kind": "lognormal", "mean": 200, "cv": 1.0, "max_tokens": 2000}}
GENERATORS = {
    "poisson": {"kind": "poisson", "rate": 1.0, "duration_s": 300, "mix": MIX},
    "gamma": {"kind": "gamma", "rate": 1.0, "cv": 4.0, "duration_s": 300, "mix": MIX},
    "mmpp": {"kind": "mmpp", "rates": [1.0, 8.0], "mean_dwell_s": [60.0, 20.0], "duration_s": 300, "mix": MIX},
    "stages": {"kind": "stages", "stages": [[1.0, 100], [3.0, 100], [1.0, 100]], "mix": MIX},
    "phase_shift": {"kind": "phase_shift", "rate": 1.0, "duration_s": 300, "phase_s": 60},
}


def _keys(load) -> set[tuple]:
    w = load.workload
    return set(zip(np.round(w.arrival_s, 9).tolist(), w.input_tokens.tolist(), w.output_tokens.tolist()))


def _counted_lengths(load) -> list[tuple[int, int]]:
    w = load.workload
    first = int(np.searchsorted(w.arrival_s, load.count_from_s, side="left"))
    return list(zip(w.input_tokens[first:].tolist(), w.output_tokens[first:].tolist()))


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_generator_loads_are_nested_across_every_pair_of_factors(kind):
    """Common random numbers: the request set at factor a is a subset of the one at b > a, for
    every pair of probed factors: the same requests at the same times for the Poisson-based
    processes (thinned), the same requests in the same order, time-compressed, for gamma."""
    src = LoadSource(kind, spec=parse_spec(GENERATORS[kind]))
    proto = Protocol(warmup_s=30, seeds=(0, 1, 2))
    factors = [0.5, 1.0, GRID_RATIO, 2.0, 2.2, 4.0, 8.0]
    loads = [build_load(src, k, 1, proto) for k in factors]
    for i in range(len(factors)):
        for j in range(i + 1, len(factors)):
            if kind == "gamma":
                a, b = _counted_lengths(loads[i]), _counted_lengths(loads[j])
                assert a == b[:len(a)], (factors[i], factors[j])
            else:
                assert _keys(loads[i]) <= _keys(loads[j]), (factors[i], factors[j])
    assert loads[0].counted_requests < loads[-1].counted_requests


def test_generator_loads_keep_their_rate_and_the_gamma_burstiness():
    proto = Protocol(warmup_s=0)
    for kind, mean_rate in (("poisson", 1.0), ("gamma", 1.0)):
        load = build_load(LoadSource(kind, spec=parse_spec(GENERATORS[kind])), 6.0, 0, proto)
        assert load.offered_rate == pytest.approx(6.0 * mean_rate, rel=0.3), kind
    gaps = np.diff(build_load(LoadSource("g", spec=parse_spec(GENERATORS["gamma"])), 2.0, 0, proto).workload.arrival_s)
    assert gaps.std() / gaps.mean() > 2.5     # CV 4 kept (time-compressed, not thinned toward Poisson)


def test_every_controller_sees_the_same_load_on_a_seed_and_seeds_differ():
    src = LoadSource("p", spec=parse_spec(GENERATORS["mmpp"]))
    proto = Protocol(warmup_s=10)
    a, b = build_load(src, 3.0, 4, proto), build_load(src, 3.0, 4, proto)
    assert np.array_equal(a.workload.arrival_s, b.workload.arrival_s)
    assert not np.array_equal(a.workload.arrival_s, build_load(src, 3.0, 5, proto).workload.arrival_s)


def _phased_trace() -> Workload:
    """An hour with 5-minute phases: prefill-heavy (long prompts, short answers), then decode-heavy."""
    rng = np.random.default_rng(7)
    t = np.sort(rng.uniform(0, 3600, 3600))
    heavy = (np.floor(t / 300) % 2) == 0
    out = np.where(heavy, rng.integers(50, 250, t.size), rng.integers(800, 1500, t.size))
    return Workload(t - t[0], rng.integers(100, 4000, t.size), out, name="phased")


def _minute_means(load) -> np.ndarray:
    w = load.workload
    minute = np.floor(w.arrival_s / 60).astype(int)
    return np.array([w.output_tokens[minute == m].mean() for m in range(int(minute.max()))])


def test_aligned_growth_keeps_the_minute_by_minute_mix_and_independent_growth_erases_it():
    src = LoadSource("phased", trace=_phased_trace())
    aligned = Protocol(warmup_s=0, span_s=1200, growth="aligned", jitter_s=10.0)
    independent = Protocol(warmup_s=0, span_s=1200, growth="independent")
    one = _minute_means(build_load(src, 1.0, 3, aligned))
    twenty = _minute_means(build_load(src, 20.0, 3, aligned))
    mixed = _minute_means(build_load(src, 20.0, 3, independent))
    # at 20x the aligned load has the same minute-by-minute mix as 1x, within sampling noise
    assert np.corrcoef(one[1:-1], twenty[1:-1])[0, 1] > 0.9
    assert np.abs(twenty - one)[1:-1].mean() < 0.15 * one.mean()
    assert twenty.max() - twenty.min() > 3 * (mixed.max() - mixed.min()) / 2
    assert _keys(build_load(src, 3.0, 3, aligned)) <= _keys(build_load(src, 3.5, 3, aligned))


def test_aligned_copies_get_their_own_prefix_ids():
    w = _phased_trace().with_shared_prefixes(np.zeros(3600, dtype=int), 64)
    src = LoadSource("phased", trace=w)
    load = build_load(src, 2.0, 0, Protocol(warmup_s=0, span_s=600, growth="aligned"))
    firsts = {int(load.workload.prefix_ids(i)[0]) for i in range(len(load.workload)) if len(load.workload.prefix_ids(i))}
    assert len(firsts) == 2      # one shared system prompt per copy, not one for both


# ------------------------------------------------------------------------------- the crossing ----
def test_crossing_is_interpolated_on_a_monotone_fit_not_the_brackets_low_end():
    curve = lambda k: 1.0 - 0.2 * math.log(k)          # noqa: E731 - crosses 0.9 at k = e^0.5
    c = search_crossing(curve, rel_tol=0.02, ceiling=64.0, max_evals=20)
    assert c.bracket[0] < math.exp(0.5) <= c.bracket[1] <= c.bracket[0] * 1.02
    assert c.factor == pytest.approx(math.exp(0.5), rel=1e-9)
    # every probe before the refinement is on the common grid (powers of 2^(1/4))
    on_grid = [k for k in c.points if abs(math.log(k) / math.log(GRID_RATIO) - round(math.log(k) / math.log(GRID_RATIO))) < 1e-9]
    assert len(c.points) - len(on_grid) <= 4    # 2^(1/4) -> 1.02 takes four halvings


def test_isotonic_fit_absorbs_a_non_monotone_blip():
    pts = {1.0: 0.99, 2.0: 0.88, 2.2: 0.92, 2.4: 0.7}     # 2.2 passes after 2.0 failed: noise
    k = interpolated_crossing(pts)
    assert 1.0 < k < 2.4 and interpolated_crossing({1.0: 0.8}) == 0.0 and interpolated_crossing({4.0: 0.95}) == 4.0


def test_seeds_are_searched_independently():
    emu = EmulatorConfig(preset="h100-llama3.1-8b-tp1", num_instances=3, slo_ttft_s=2.0, slo_tpot_s=0.1)
    spec = parse_spec({"kind": "poisson", "rate": 1.0, "duration_s": 20,
                       "mix": {"input": {"kind": "fixed", "tokens": 512}, "output": {"kind": "fixed", "tokens": 32}}})
    src = LoadSource("p", spec=spec)
    together = search_controller(src, emu, "arrow", Protocol(warmup_s=5, seeds=(0, 1, 2), rel_tol=0.2, max_evals=8))
    alone = search_controller(src, emu, "arrow", Protocol(warmup_s=5, seeds=(2,), rel_tol=0.2, max_evals=8))
    assert (together[2].factor, together[2].points, together[2].bracket) == (alone[0].factor, alone[0].points,
                                                                              alone[0].bracket)


# ------------------------------------------------------------------------ paired statistics ----
def test_paired_ratio_sees_a_consistent_gain_that_overlapping_intervals_call_a_tie():
    base = [10.0, 20.0, 30.0, 40.0, 50.0]
    better = [x * 1.05 for x in base]
    better[0] *= 1.01
    p = paired_ratio(better, base, floor=0.1)
    assert p.lo > 1.0 and p.ratio == pytest.approx(1.05, rel=0.01) and p.p_value < 0.05
    same = paired_ratio(base, base, floor=0.1)
    assert (same.ratio, same.lo, same.hi, same.p_value) == (1.0, 1.0, 1.0, 1.0)


def test_holm_corrects_across_the_family():
    assert holm([0.01, 0.04, 0.03]) == [True, False, False]
    assert holm([0.001, 0.02, 0.024]) == [True, True, True]
    verdicts = call_verdicts([paired_ratio([2.0] * 5, [1.0] * 5, 0.1), paired_ratio([1.0, 1.1, 0.9, 1.0, 1.0], [1.0] * 5, 0.1),
                              paired_ratio([1.0] * 5, [2.0] * 5, 0.1)])
    assert [v.verdict for v in verdicts] == ["win", "tie", "loss"]


def test_a_ceiling_rate_cannot_lose():
    p = call_verdicts([paired_ratio([1.0] * 5, [2.0] * 5, 0.1, censored="a")])[0]
    assert p.verdict == "tie"


def test_geomean_interval_covers_the_point_and_is_deterministic():
    groups = [np.log([1.1, 1.2, 1.15]), np.log([0.9, 1.0, 0.95]), np.log([1.3, 1.25, 1.4])]
    g, lo, hi = geomean_interval(groups, seed=3)
    assert lo <= g <= hi and (g, lo, hi) == geomean_interval(groups, seed=3)
