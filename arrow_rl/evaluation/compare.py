"""Candidate against reference on a saved suite result: the model-selection rule, written down.

Choosing a checkpoint (among a run's snapshots, or a new recipe against the shipped default) is a
decision a test scenario must not see. The rule is a **non-inferiority** test on paired ratios
(``arrow_rl.evaluation.paired``): a candidate replaces the reference only if

* on every scenario of the chosen split (``train``, or the validation suite), the lower end of the
  95% interval of its paired ratio to the reference is above ``MARGIN`` (0.97: it is at worst 3%
  behind, with 95% confidence), and
* the 95% interval of its geometric-mean ratio to the reference over those scenarios
  (hierarchical bootstrap: scenarios, then seeds) lies above 1.0.

A *recipe* is judged over at least ``MIN_TRAINING_SEEDS`` training seeds: its checkpoints are
pooled into one controller whose rate on each (scenario, evaluation seed) is the geometric mean of
the checkpoints' rates there, and the rule is applied to that pooled controller. One lucky seed
then cannot carry a recipe, and a recipe's spread over seeds is part of its interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from arrow_rl.evaluation.intervals import Interval, mean_ci95
from arrow_rl.evaluation.paired import Paired, geomean_interval, log_ratios, paired_ratio
from arrow_rl.evaluation.suite import SuiteResult

MARGIN = 0.97
MIN_TRAINING_SEEDS = 3


@dataclass(frozen=True)
class Cell:
    """One scenario: the candidate's and the reference's rates and their paired ratio."""

    scenario: str
    split: str
    candidate: Interval
    reference: Interval
    paired: Paired
    flips_per_min: float

    @property
    def non_inferior(self) -> bool:
        return self.paired.lo > MARGIN

    @property
    def verdict(self) -> str:
        """``win`` (the interval lies above 1), ``non-inferior`` (its lower end is above ``MARGIN``),
        ``loss`` (it lies below 1 and reaches below the margin) or ``inconclusive``."""
        if self.paired.lo > 1.0:
            return "win"
        if self.paired.hi < 1.0 and not self.non_inferior:
            return "loss"
        return "non-inferior" if self.non_inferior else "inconclusive"


@dataclass(frozen=True)
class Comparison:
    candidate: str
    reference: str
    cells: list[Cell]
    missing: list[str]           # scenarios of the split where either controller has no cell
    geomean: tuple[float, float, float]   # (ratio, lo, hi) of the candidate to the reference
    training_seeds: int = 1      # checkpoints pooled into the candidate (a recipe's training seeds)

    def count(self, verdict: str) -> int:
        return sum(c.verdict == verdict for c in self.cells)

    @property
    def failures(self) -> list[str]:
        """Why the rule is not met (empty when it is)."""
        out = []
        if not self.cells:
            out.append("no scenario to compare on")
        if self.missing:
            out.append("no cell on " + ", ".join(self.missing))
        below = [c.scenario for c in self.cells if not c.non_inferior]
        if below:
            out.append(f"paired-ratio lower bound not above {MARGIN:g} on " + ", ".join(below))
        g, lo, _ = self.geomean
        if not (lo > 1.0):
            out.append(f"geomean interval not above 1.0 ({g:.3f}x, lower bound {lo:.3f})")
        if self.training_seeds < MIN_TRAINING_SEEDS:
            out.append(f"{self.training_seeds} training seed(s); a recipe is judged over at least {MIN_TRAINING_SEEDS}")
        return out

    @property
    def meets_rule(self) -> bool:
        return not self.failures


def _rates(result: SuiteResult, scenario: str, controllers: list[str]) -> dict[int, float] | None:
    """Per evaluation seed, the geometric mean of ``controllers``' rates (one controller: its rates)."""
    sc = result.scenarios[scenario]
    if any(c not in sc.controllers for c in controllers):
        return None
    per = [sc.controllers[c].rates_by_seed() for c in controllers]
    seeds = [s for s in per[0] if all(s in p for p in per)]
    floor = sc.floor_rate
    return {s: float(np.exp(np.mean([math.log(max(p[s], floor)) for p in per]))) for s in seeds}


def compare(result: SuiteResult, candidate: str | list[str], reference: str, split: str | None = "train") -> Comparison:
    """Compare ``candidate`` (one controller, or a list of checkpoints pooled as one recipe) with
    ``reference`` on every scenario of ``split`` (None: all)."""
    members = [candidate] if isinstance(candidate, str) else list(candidate)
    for name in [*members, reference]:
        if name not in result.controllers:
            raise ValueError(f"controller {name!r} is not in the suite result; it has {', '.join(result.controllers)}")
    label = members[0] if len(members) == 1 else "pool(" + ", ".join(members) + ")"
    cells, missing, groups = [], [], []
    for name, sc in result.scenarios.items():
        if split is not None and sc.scenario.split != split:
            continue
        cand, ref = _rates(result, name, members), _rates(result, name, [reference])
        if cand is None or ref is None:
            missing.append(name)
            continue
        seeds = [s for s in cand if s in ref]
        a, b = [cand[s] for s in seeds], [ref[s] for s in seeds]
        ceil = ("a" if any(sc.controllers[m].interval.at_ceiling for m in members) else "") + \
               ("b" if sc.controllers[reference].interval.at_ceiling else "")
        groups.append(log_ratios(a, b, sc.floor_rate))
        fpm = float(np.mean([sc.controllers[m].flips_per_min for m in members]))
        cells.append(Cell(name, sc.scenario.split, mean_ci95(a), mean_ci95(b),
                          paired_ratio(a, b, sc.floor_rate, ceil), fpm))
    geo = geomean_interval(groups) if groups else (math.nan, math.nan, math.nan)
    return Comparison(label, reference, cells, missing, geo, training_seeds=len(members))
