"""Episode draws for the generalist (``EnvConfig.distribution``).

Each ``reset`` draws, from the env's seeded ``np_random`` only: a preset (optionally weighted, with
rates scaled to its capacity: ``preset_weights``, ``rates_by_capacity``), an SLO tier, a cluster
size N, a workload (a window of a training trace replayed at a rate proportional to N, or a seeded
synthetic workload with randomised rate, P/D mix, burstiness, phase period and output tail) and a
starting P:D:M split. The suite's test scenarios are never drawn: the traces are configured (and
``tests/test_suite.py`` checks that no shipped config names a held-out one) and the generators'
parameters are continuous draws, not any scenario's spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from arrow_rl.perf.capacity import relative_capacity
from envs.config import DistributionConfig, GeneratorRanges


@dataclass(frozen=True)
class EpisodeDraw:
    """What one episode runs on."""

    preset: str
    slo_tier: str
    slo_ttft_s: float
    slo_tpot_s: float
    num_instances: int
    split: tuple[int, int, int]              # (prefill, decode, mixed) at start
    trace: str | None = None                 # a trace window (with trace_rate_scale) ...
    trace_rate_scale: float = 1.0
    generator: dict[str, Any] | None = None  # ... or a generator spec (arrow_rl.workload.generators)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"preset": self.preset, "slo_tier": self.slo_tier, "split": list(self.split)}
        if self.generator is not None:
            out["generator"] = self.generator
        return out


def _log_uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if hi > lo else float(lo)


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(rng.uniform(lo, hi)) if hi > lo else float(lo)


def random_split(rng: np.random.Generator, n: int, mixed_probability: float, min_pool: int = 1) -> tuple[int, int, int]:
    """A starting (P, D, M): with ``mixed_probability`` a MIXED pool of uniform size 1..N, else none;
    then P uniform among the splits keeping P and D >= ``min_pool`` (or both 0 when M = N)."""
    m = int(rng.integers(1, n + 1)) if rng.random() < mixed_probability else 0
    rest = n - m
    if 0 < rest < 2 * min_pool:      # no room for both pools: give the remainder to MIXED
        m, rest = n, 0
    if rest == 0:
        return 0, 0, n
    p = int(rng.integers(min_pool, rest - min_pool + 1))
    return p, rest - p, m


def _length(rng: np.random.Generator, mean_range: tuple[float, float], cv_range: tuple[float, float],
            max_tokens: int) -> dict[str, Any]:
    mean = min(_log_uniform(rng, mean_range), float(max_tokens))
    return {"kind": "lognormal", "mean": round(mean, 1), "cv": round(_uniform(rng, cv_range), 3),
            "max_tokens": max_tokens}


def random_generator(rng: np.random.Generator, g: GeneratorRanges, n: int, duration_s: float,
                     capacity: float = 1.0) -> dict[str, Any]:
    """A seeded generator spec whose rate scales with N (``rate_per_instance``) and with the preset's
    ``capacity`` relative to the distribution's first preset (``rates_by_capacity``)."""
    kind = g.kinds[int(rng.integers(len(g.kinds)))]
    rate = round(_log_uniform(rng, g.rate_per_instance) * n * capacity, 4)
    mix = {"input": _length(rng, g.input_mean, g.input_cv, g.max_tokens),
           "output": _length(rng, g.output_mean, g.output_cv, g.max_tokens)}
    spec: dict[str, Any] = {"kind": kind, "duration_s": float(duration_s), "mix": mix}
    if kind == "poisson":
        spec["rate"] = rate
    elif kind == "gamma":
        spec.update(rate=rate, cv=round(_uniform(rng, g.burst_cv), 3))
    elif kind == "mmpp":
        spec.update(rates=[rate, round(rate * _uniform(rng, g.burst_ratio), 4)],
                    mean_dwell_s=[round(_uniform(rng, g.burst_dwell_s), 2), round(_uniform(rng, g.burst_dwell_s), 2)])
    else:  # phase_shift: the drawn mix alternates with its mirror (prompt and output means swapped)
        mirror = {"input": dict(mix["output"]), "output": dict(mix["input"])}
        spec.update(rate=rate, phase_s=round(_uniform(rng, g.phase_s), 2), phases=[mix, mirror])
        del spec["mix"]
    return spec


def draw_episode(rng: np.random.Generator, dist: DistributionConfig, duration_s: float, min_pool: int = 1,
                 num_instances: int | None = None) -> EpisodeDraw:
    """One episode's draw (module docstring). ``num_instances`` pins N (reset options)."""
    if dist.preset_weights is None:   # the uniform draw keeps older configs' RNG stream
        preset = dist.presets[int(rng.integers(len(dist.presets)))]
    else:
        w = np.asarray(dist.preset_weights, dtype=float)
        preset = dist.presets[int(rng.choice(len(w), p=w / w.sum()))]
    capacity = relative_capacity(preset, dist.presets[0]) if dist.rates_by_capacity else 1.0
    tiers = sorted(dist.slo_tiers)
    tier = tiers[int(rng.integers(len(tiers)))]
    lo, hi = dist.num_instances
    n = num_instances if num_instances is not None else int(rng.integers(lo, hi + 1))
    split = random_split(rng, n, dist.mixed_start_probability, min_pool)
    slo = dist.slo_tiers[tier]
    common = dict(preset=preset, slo_tier=tier, slo_ttft_s=slo.ttft_s, slo_tpot_s=slo.tpot_s, num_instances=n,
                  split=split)
    if dist.traces and rng.random() < dist.trace_probability:
        trace = dist.traces[int(rng.integers(len(dist.traces)))]
        scale = _log_uniform(rng, dist.trace_rate_scale) * n / 8.0 * capacity
        return EpisodeDraw(**common, trace=trace, trace_rate_scale=scale)
    return EpisodeDraw(**common, generator=random_generator(rng, dist.generator, n, duration_s, capacity))
