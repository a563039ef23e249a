"""Candidate against reference on a saved suite result: the model-selection rule, written down.

Choosing a checkpoint (among a run's snapshots, or a new run against the shipped default) is a
decision a test scenario must not see. The rule the project ships checkpoints by is: on every
scenario of the chosen split (``train``), the candidate ties or beats the reference (their 95%
intervals overlap, or the candidate's lies above), and its geometric-mean ratio to Arrow over those
scenarios is higher. ``compare`` applies it to the cells of a ``SuiteResult`` (one run, or several
merged with ``suite report``'s rules), so the choice is a command, not a notebook.
"""

from __future__ import annotations

from dataclasses import dataclass

from arrow_rl.evaluation.intervals import Interval, geomean
from arrow_rl.evaluation.suite import BASELINE, SuiteResult


@dataclass(frozen=True)
class Cell:
    """One scenario: the candidate's and the reference's intervals and the verdict between them."""

    scenario: str
    split: str
    candidate: Interval
    reference: Interval
    arrow: Interval | None
    flips_per_min: float

    @property
    def verdict(self) -> str:
        """``win`` (the candidate's interval lies above), ``loss`` (below) or ``tie`` (they overlap)."""
        if self.candidate.lo > self.reference.hi:
            return "win"
        if self.candidate.hi < self.reference.lo:
            return "loss"
        return "tie"


@dataclass(frozen=True)
class Comparison:
    candidate: str
    reference: str
    cells: list[Cell]
    missing: list[str]   # scenarios of the split where either controller has no cell

    def _geomean(self, side: str) -> float | None:
        ratios = [getattr(c, side).mean / c.arrow.mean for c in self.cells
                  if c.arrow is not None and c.arrow.mean > 0]
        return geomean(ratios) if len(ratios) == len(self.cells) else None

    @property
    def candidate_geomean(self) -> float | None:
        """Geometric mean of the candidate's ratio to Arrow over the compared scenarios (None if Arrow
        is missing on any of them)."""
        return self._geomean("candidate")

    @property
    def reference_geomean(self) -> float | None:
        return self._geomean("reference")

    def count(self, verdict: str) -> int:
        return sum(c.verdict == verdict for c in self.cells)

    @property
    def meets_rule(self) -> bool:
        """No loss on any compared scenario, none missing, and a higher geomean vs Arrow."""
        a, b = self.candidate_geomean, self.reference_geomean
        return (bool(self.cells) and not self.missing and self.count("loss") == 0
                and a is not None and b is not None and a > b)


def compare(result: SuiteResult, candidate: str, reference: str, split: str | None = "train") -> Comparison:
    """Compare ``candidate`` with ``reference`` on every scenario of ``split`` (None: all)."""
    for name in (candidate, reference):
        if name not in result.controllers:
            raise ValueError(f"controller {name!r} is not in the suite result; it has {', '.join(result.controllers)}")
    cells, missing = [], []
    for name, sc in result.scenarios.items():
        if split is not None and sc.scenario.split != split:
            continue
        cand, ref = sc.controllers.get(candidate), sc.controllers.get(reference)
        if cand is None or ref is None:
            missing.append(name)
            continue
        arrow = sc.controllers.get(BASELINE)
        cells.append(Cell(name, sc.scenario.split, cand.interval, ref.interval,
                          arrow.interval if arrow is not None else None, cand.flips_per_min))
    return Comparison(candidate, reference, cells, missing)
