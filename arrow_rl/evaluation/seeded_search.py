"""Serving rate of one controller on one scenario, per seed, under a ``Protocol``.

One search per seed (``arrow_rl.evaluation.crossing``): the factor grid common to every controller,
bracketed and bisected until the bracket is within the protocol's tolerance, and the crossing of
90% attainment (Arrow §6.1) interpolated from every probed point. Seeds are independent: no seed
starts from another seed's answer, so the seeds' spread is an honest spread. Every controller on a
(scenario, seed) sees the same requests at the same factor, and loads are nested across factors
(``arrow_rl.evaluation.protocol``), so per-seed ratios between controllers are paired comparisons.

Static splits come in two kinds, reported under two names:

* ``static-oracle`` - the best static P:D:M split *per seed*, found by one pruned search over all
  splits at once: at a factor ``k`` the union passes as soon as one split passes. With nested loads
  a split's attainment does not rise with load (up to noise), so a split that failed at some factor
  ≤ ``k`` is skipped and one that passed at some factor ≥ ``k`` counts as passing without a run.
  Splits are searched coarse to fine in stages that share what was learned: (1) the P/D splits;
  (2) the union of those and the coarse grid with a MIXED pool (``coarse_mixed``: M and P on a step
  of about N/4, all-MIXED included); (3) the winner's neighbours one flip away, repeatedly, until
  none is left untried. It picks with hindsight on the very seed it is scored on: an upper bound
  for static splits, not a controller anyone can deploy.
* ``static-tuned`` - the split a deployer would fix, chosen by cross-fitting: for seed ``i``, among
  the splits that won some *other* seed, the one with the highest mean serving rate over the other
  seeds; its rate on seed ``i`` is then out of sample. Each candidate's per-seed rate comes from its
  own search on the same grid (reusing the oracle search's runs).

Every run stops as soon as its attainment surely ends below ``target - stop_margin``
(``run_policy(stop_below=...)``): pass/fail is unchanged, an overloaded run costs 10–20× a passing
one if played to the end, and runs that fail by less than the margin play to the end, so the
points that bracket a crossing carry exact attainments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from arrow_rl.controllers.registry import make_policy
from arrow_rl.controllers.splits import Split, coarse_mixed, neighbours, pd_splits
from arrow_rl.evaluation.crossing import TARGET_ATTAINMENT, Crossing, interpolated_crossing, search_crossing
from arrow_rl.evaluation.protocol import GeneratorMaster, Load, LoadSource, Protocol, build_load, generator_master
from arrow_rl.evaluation.runner import run_policy

STATIC_ORACLE = "static-oracle"
STATIC_TUNED = "static-tuned"
STATIC_FAMILY = (STATIC_ORACLE, STATIC_TUNED)
# Names the suite no longer accepts, with what replaced them (a clear error, not a silent change).
RENAMED = {"static-best": f"{STATIC_ORACLE} (per-seed hindsight best, not deployable) or {STATIC_TUNED} "
                          "(cross-fitted on other seeds, deployable)",
           "static-best-pd": f"{STATIC_ORACLE} or {STATIC_TUNED}"}


@dataclass
class SeedResult:
    """One seed's serving rate of one controller."""

    seed: int
    factor: float               # interpolated serving factor (0: none passed down to the lowest factor)
    rate: float                 # offered req/s of the counted span at that factor
    at_ceiling: bool
    flips_per_min: float        # at the highest passing factor
    counted_span_s: float
    simulations: int
    best_split: Split | None = None      # static-oracle / static-tuned: the split behind the rate
    points: dict[float, float] = field(default_factory=dict)  # factor -> attainment (union for static-oracle)
    bracket: tuple[float, float] = (0.0, math.inf)


@dataclass
class _Runner:
    """Runs specs on one scenario's loads at (factor, seed); loads, generator draws and run
    outcomes are cached (a static split's own search reuses the oracle search's runs)."""

    source: LoadSource
    emulator_config: Any
    protocol: Protocol
    arrow_config: Any = None
    on_run: Callable[[str, float, float], None] | None = None
    mixed_config: Any = None     # the MIXED dispatcher's policy (``MixedConfig``; None: its defaults)
    preset: Any = None           # a preset object instead of the config's named one (power checks)
    runs: int = 0
    _loads: dict[tuple[float, int], Load] = field(default_factory=dict)
    _masters: dict[int, GeneratorMaster] = field(default_factory=dict)
    _outcomes: dict[tuple[str, float, int], tuple[float, float, float]] = field(default_factory=dict)

    def load(self, factor: float, seed: int) -> Load:
        key = (factor, seed)
        if key not in self._loads:
            if len(self._loads) > 8:
                self._loads.clear()
            master = None
            if self.source.spec is not None and self.protocol.rate_mode == "superpose":
                if seed not in self._masters:
                    self._masters.clear()   # one seed at a time: a master holds ceiling x the load
                    self._masters[seed] = generator_master(self.source.spec, seed, self.protocol.ceiling_factor)
                master = self._masters[seed]
            self._loads[key] = build_load(self.source, factor, seed, self.protocol, master)
        return self._loads[key]

    def run(self, spec: str, factor: float, seed: int) -> tuple[float, float, float]:
        """(attainment, flips per minute, reach) of ``spec``; a run that surely ends below
        ``target - stop_margin`` stops early, and ``reach`` is the fraction of the counted span it
        got through (1: all)."""
        key = (spec, factor, seed)
        if key in self._outcomes:
            return self._outcomes[key]
        load = self.load(factor, seed)
        policy = make_policy(spec, int(self.emulator_config.num_instances), arrow_config=self.arrow_config,
                             mixed_config=self.mixed_config)
        r = run_policy(load.workload, self.emulator_config, policy,
                       control_interval_s=self.protocol.control_interval_s, seed=seed,
                       count_from_s=load.count_from_s, stop_below=TARGET_ATTAINMENT - self.protocol.stop_margin,
                       preset=self.preset)
        self.runs += 1
        if self.on_run is not None:
            self.on_run(spec, load.offered_rate, r.attainment)
        reach = 1.0
        if r.stopped_early and load.counted_span_s > 0:
            reach = min(1.0, max(0.0, (r.sim_end_s - load.count_from_s) / load.counted_span_s))
        self._outcomes[key] = (r.attainment, r.flips_per_min, reach)
        return self._outcomes[key]

    def points_of(self, spec: str, seed: int) -> dict[float, float]:
        """Every attainment ``spec`` was run to at ``seed`` (factor -> attainment)."""
        return {k: out[0] for (sp, k, sd), out in self._outcomes.items() if sp == spec and sd == seed}


def _search(f: Callable[[float], float], protocol: Protocol) -> Crossing:
    return search_crossing(f, rel_tol=protocol.rel_tol, ceiling=protocol.ceiling_factor,
                           max_evals=protocol.max_evals)


def search_seed(runner: _Runner, controller: str, seed: int) -> SeedResult:
    """One seed's serving rate of ``controller`` (a static split, Arrow, a checkpoint, ...)."""
    runs_before = runner.runs
    flips: dict[float, float] = {}

    def f(k: float) -> float:
        att, fpm, _ = runner.run(controller, k, seed)
        flips[k] = fpm
        return att

    c = _search(f, runner.protocol)
    return _result(runner, seed, c, flips.get(c.bracket[0], 0.0), runs_before)


class _UnionSearch:
    """The pruned search over a set of splits at one seed (module docstring); what it learned
    (which split passed or failed at which factor) carries over when the set grows."""

    def __init__(self, runner: _Runner, seed: int) -> None:
        self.runner, self.seed = runner, seed
        self.passed: dict[Split, float] = {}   # split -> highest factor it passed at
        self.failed: dict[Split, float] = {}   # split -> lowest factor it failed at
        self.last_att: dict[Split, float] = {}
        self.last_reach: dict[Split, float] = {}
        self.winner_at: dict[float, Split] = {}
        self.points: dict[float, float] = {}

    def search(self, splits: list[Split], key: Callable[[Split], Any]) -> tuple[Crossing, Split | None]:
        """The union's crossing over ``splits`` and the split that passes at its bracket's low end.
        ``key`` breaks ties among splits with no evidence yet (which to run first)."""

        def order() -> list[Split]:
            # most promising first: highest known pass, then furthest reach and best attainment
            return sorted(splits, key=lambda s: (-self.passed.get(s, 0.0), -self.last_reach.get(s, 1.0),
                                                 -self.last_att.get(s, 1.0), key(s)))

        def f(k: float) -> float:
            best = 0.0
            for s in order():
                if self.failed.get(s, math.inf) <= k:
                    continue
                if self.passed.get(s, 0.0) >= k:  # passed at a higher load already: passes here (no run)
                    self.winner_at[k] = s
                    return max(TARGET_ATTAINMENT, self.points.get(k, 0.0))
                att, _, reach = self.runner.run(s.spec, k, self.seed)
                self.last_att[s], self.last_reach[s] = att, reach
                if att >= TARGET_ATTAINMENT:
                    self.passed[s] = max(self.passed.get(s, 0.0), k)
                    self.winner_at[k] = s
                    return att
                self.failed[s] = min(self.failed.get(s, math.inf), k)
                best = max(best, att)
            return best

        c = _search(f, self.runner.protocol)
        self.points.update(c.points)
        lo = c.bracket[0]
        return c, self.winner_at.get(lo) if lo > 0 else None


def search_static_oracle(runner: _Runner, seed: int) -> SeedResult:
    """``static-oracle`` at one seed: the best P:D:M split, searched coarse to fine (module docstring)."""
    runs_before = runner.runs
    n = int(runner.emulator_config.num_instances)
    u = _UnionSearch(runner, seed)
    pd = pd_splits(n)
    c, w = u.search(pd, key=lambda s: (abs(s.p - n / 2), s.p))
    cands = list(dict.fromkeys(pd + coarse_mixed(n)))
    for _ in range(n * n):   # bounded: each round adds at least one split of the finite set
        centre = w if w is not None else Split(0, 0, n)
        c, w = u.search(cands, key=lambda s: (s.distance(centre), s))
        centre = w if w is not None else centre
        fresh = [s for s in neighbours(centre, n) if s not in cands]
        if not fresh:
            break
        cands += fresh
    if w is not None:   # the crossing of the winner's own attainment curve, not of the union's mixed points
        own = runner.points_of(w.spec, seed)
        c = Crossing(max(interpolated_crossing(own), c.bracket[0]), c.bracket, c.points, c.at_ceiling)
    res = _result(runner, seed, c, 0.0, runs_before)
    res.best_split = w
    return res


def search_static(runner: _Runner, seeds: tuple[int, ...]) -> dict[str, list[SeedResult]]:
    """``static-oracle`` and ``static-tuned`` on every seed (module docstring)."""
    oracle = [search_static_oracle(runner, s) for s in seeds]
    winners = list(dict.fromkeys(r.best_split for r in oracle if r.best_split is not None))
    per_split: dict[Split, dict[int, SeedResult]] = {}
    for split in winners:
        per_split[split] = {}
        for s in seeds:
            r = search_seed(runner, split.spec, s)
            r.best_split = split
            per_split[split][s] = r
    tuned: list[SeedResult] = []
    for i, s in enumerate(seeds):
        others = [t for t in seeds if t != s]
        cands = list(dict.fromkeys(oracle[j].best_split for j, t in enumerate(seeds)
                                   if t != s and oracle[j].best_split is not None))
        if not cands:       # no other seed passed with any split: the middle P/D split
            n = int(runner.emulator_config.num_instances)
            cands = [Split(n // 2, n - n // 2, 0)]
            per_split.setdefault(cands[0], {})
        for split in cands:
            for t in seeds:
                if t not in per_split[split]:
                    r = search_seed(runner, split.spec, t)
                    r.best_split = split
                    per_split[split][t] = r
        chosen = max(cands, key=lambda sp: (sum(per_split[sp][t].rate for t in others), -sp.distance(cands[0])))
        tuned.append(per_split[chosen][s])
    return {STATIC_ORACLE: oracle, STATIC_TUNED: tuned}


def _result(runner: _Runner, seed: int, c: Crossing, fpm: float, runs_before: int) -> SeedResult:
    load = runner.load(c.factor, seed) if c.factor > 0 else None
    return SeedResult(seed=seed, factor=c.factor, rate=load.offered_rate if load else 0.0,
                      at_ceiling=c.at_ceiling, flips_per_min=fpm,
                      counted_span_s=load.counted_span_s if load else 0.0,
                      simulations=runner.runs - runs_before, points=c.points, bracket=c.bracket)


def make_runner(source: LoadSource, emulator_config: Any, protocol: Protocol, arrow_config: Any = None,
                on_run: Callable[[str, float, float], None] | None = None, mixed_config: Any = None,
                preset: Any = None) -> _Runner:
    return _Runner(source, emulator_config, protocol, arrow_config, on_run, mixed_config, preset)


def search_controller(source: LoadSource, emulator_config: Any, controller: str, protocol: Protocol,
                      arrow_config: Any = None,
                      on_run: Callable[[str, float, float], None] | None = None,
                      mixed_config: Any = None, preset: Any = None) -> list[SeedResult]:
    """Every seed of ``protocol`` for one controller, each searched on its own."""
    if controller in RENAMED:
        raise ValueError(f"controller {controller!r} was renamed: use {RENAMED[controller]}")
    runner = make_runner(source, emulator_config, protocol, arrow_config, on_run, mixed_config, preset)
    if controller in STATIC_FAMILY:
        return search_static(runner, protocol.seeds)[controller]
    return [search_seed(runner, controller, s) for s in protocol.seeds]
