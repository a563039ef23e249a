"""Paired comparisons of serving rates: per-seed log-ratios, Holm across scenarios, a geomean interval.

Why paired: every controller on a (scenario, seed) serves the same requests at the same loads
(``arrow_rl.evaluation.protocol``), so the seed-to-seed spread of the load cancels in the per-seed
ratio. Overlap of two unpaired intervals ignores that and, with few seeds, calls almost everything
a tie.

* Per scenario, ``d_s = log(rate_a,s / rate_b,s)`` over the seeds both have; the ratio is
  ``exp(mean d)`` and its 95% interval is the paired Student-t interval on ``d`` (the textbook
  interval for a mean of a few independent paired differences; seeds are independent searches).
  The two-sided p-value is the matching one-sample t-test of mean ``d`` = 0.
* A verdict (win / loss / tie) is called from that p-value after a **Holm** correction across the
  scenarios of one split (the family is "this controller against that rival on every scenario of
  the split"), at family-wise level 5%: a win or a loss only where the adjusted p-value is below
  0.05; a tie otherwise. The interval shown is the unadjusted 95% one.
* A rate of 0 (nothing passed down to the lowest factor) is floored at ``floor`` req/s before the
  log, and a rate at the search ceiling is a lower bound: a ratio against a ceiling rate is
  reported, but a verdict the true (higher) rate could reverse is a tie (a loss of the side at the
  ceiling, a win over it).
* The suite-level geometric mean of a controller's ratio to Arrow gets a percentile interval from a
  hierarchical bootstrap: scenarios resampled with replacement, then seeds within each scenario.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class Paired:
    """One paired comparison (a against b) on one scenario."""

    ratio: float                 # exp(mean per-seed log-ratio)
    lo: float                    # 95% interval of the ratio (unadjusted)
    hi: float
    p_value: float
    n: int
    verdict: str = "tie"         # after Holm: win / loss / tie (of a against b)
    censored: str = ""           # "a", "b" or "ab": whose rate sits at the search ceiling (a lower bound)

    def with_verdict(self, verdict: str) -> "Paired":
        return Paired(self.ratio, self.lo, self.hi, self.p_value, self.n, verdict, self.censored)

    def to_json(self) -> dict:
        return {"ratio": self.ratio, "ci95": [self.lo, self.hi], "p_value": self.p_value, "n": self.n,
                "verdict": self.verdict, **({"censored": self.censored} if self.censored else {})}


def log_ratios(a: list[float], b: list[float], floor: float) -> np.ndarray:
    """Per-seed log(a / b), rates floored at ``floor`` (> 0)."""
    if len(a) != len(b):
        raise ValueError(f"paired rates need the same seeds: {len(a)} vs {len(b)}")
    x = np.maximum(np.asarray(a, dtype=float), floor)
    y = np.maximum(np.asarray(b, dtype=float), floor)
    return np.log(x) - np.log(y)


def paired_ratio(a: list[float], b: list[float], floor: float, censored: str = "") -> Paired:
    """Paired ratio of rates ``a`` to ``b`` (one per seed, same seeds) with its 95% t-interval."""
    d = log_ratios(a, b, floor)
    n = int(d.size)
    mean = float(d.mean()) if n else 0.0
    if n < 2:
        return Paired(math.exp(mean), math.exp(mean), math.exp(mean), 1.0, n, censored=censored)
    sd = float(d.std(ddof=1))
    if sd == 0.0:   # identical on every seed (the same split, or the same controller twice)
        p = 1.0 if mean == 0.0 else 0.0
        return Paired(math.exp(mean), math.exp(mean), math.exp(mean), p, n, censored=censored)
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    p = float(2.0 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    return Paired(math.exp(mean), math.exp(mean - half), math.exp(mean + half), p, n, censored=censored)


def holm(p_values: list[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise level ``alpha``."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    rejected = [False] * m
    for rank, i in enumerate(order):
        if p_values[i] > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


def call_verdicts(comparisons: list[Paired], alpha: float = ALPHA) -> list[Paired]:
    """Win / loss / tie for one family (one controller against one rival across a split's scenarios)."""
    rejected = holm([c.p_value for c in comparisons], alpha)
    out = []
    for c, rej in zip(comparisons, rejected):
        verdict = "tie"
        if rej:
            verdict = "win" if c.ratio > 1.0 else "loss"
            if (verdict == "win" and "b" in c.censored) or (verdict == "loss" and "a" in c.censored):
                verdict = "tie"   # the censored side's true rate is higher: this verdict could reverse
        out.append(c.with_verdict(verdict))
    return out


def geomean_interval(per_scenario_log_ratios: list[np.ndarray], seed: int = 0,
                     samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float, float]:
    """(geomean, lo, hi): the geometric mean over scenarios of each scenario's mean per-seed ratio,
    with a 95% percentile interval from a hierarchical bootstrap (scenarios, then seeds)."""
    groups = [np.asarray(g, dtype=float) for g in per_scenario_log_ratios if len(g)]
    if not groups:
        return math.nan, math.nan, math.nan
    point = float(np.mean([g.mean() for g in groups]))
    rng = np.random.default_rng([seed, 0xB007])
    k = len(groups)
    draws = np.empty(samples)
    for b in range(samples):
        picks = rng.integers(0, k, size=k)
        draws[b] = np.mean([groups[i][rng.integers(0, groups[i].size, size=groups[i].size)].mean() for i in picks])
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return math.exp(point), math.exp(float(lo)), math.exp(float(hi))
