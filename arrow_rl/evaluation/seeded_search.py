"""Serving rate of one controller on one scenario, per seed, under a ``Protocol``.

One search per seed: the highest rate factor whose counted SLO attainment is ≥ 90% (Arrow §6.1),
bracketed then bisected in log space to the protocol's tolerance. The first seed searches blind
(×2 steps from factor 1); later seeds start at the first seed's answer with small steps, which
saves most of their simulations. Every seed uses the same load at the same factor for every
controller (common random numbers), so differences between controllers are not load noise.

``static-best`` is the best static split *per seed*, found by one pruned search over all splits:
at a rate factor ``k`` the union passes as soon as one split passes. Assuming each split's
attainment does not rise with load, a split that failed at some factor ≤ ``k`` is skipped and
one that passed at some factor ≥ ``k`` counts as passing without a run. Every surviving split is
tried at a failing factor: an earlier screen that kept only the three best by attainment (or by how
far a stopped run got) dropped the true best split on non-stationary loads (phase shift: 7P:1D
outlasts 6P:2D in a prefill-heavy phase yet fails the decode-heavy one), and early stopping makes
a failing run cheap enough not to need it. Later seeds search only the first seed's best split and
its two neighbours (a documented choice). That is ``static-best-pd``.

``static-best`` adds splits with a MIXED pool (issue 12; ``arrow_rl.controllers.splits``), coarse
to fine, in stages that share what was learned (which split passed or failed where): (1) the P/D
search above, unchanged, so the answer never falls below it; (2) from its answer (which passes
there without a run) the union of the P/D splits and the coarse grid (M and P on a step of about
N/4, all-MIXED included); (3) the winner's neighbours one flip away, repeatedly, until none is
left untried. Later seeds: the first seed's P/D winner ± 1 in stage 1, its overall winner and
that split's neighbours in stage 2.

Every run stops as soon as it cannot reach the target (``run_policy(stop_below=...)``): a search
needs only pass/fail, and an overloaded run costs 10–20× a passing one if played to the end. The
attainments kept for failed factors are therefore upper bounds (all below the target).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from arrow_rl.controllers.registry import make_policy
from arrow_rl.evaluation.protocol import Load, LoadSource, Protocol, build_load
from arrow_rl.evaluation.runner import run_policy
from arrow_rl.controllers.splits import Split, coarse_mixed, neighbours, pd_splits
from arrow_rl.metrics.serving_rate import TARGET_ATTAINMENT, find_serving_rate

MIN_FACTOR = 1.0 / 64
STATIC_BEST = ("static-best", "static-best-pd")


@dataclass
class SeedResult:
    """One seed's serving rate of one controller."""

    seed: int
    factor: float               # highest passing rate factor (0: none passed down to MIN_FACTOR)
    rate: float                 # offered req/s of the counted span at that factor
    at_ceiling: bool
    flips_per_min: float
    counted_span_s: float
    simulations: int
    best_split: Split | None = None      # static-best: the winning split at ``factor``
    points: dict[float, float] = field(default_factory=dict)  # factor -> attainment (union for static-best)
    # static-best: the P/D-only search on the way (what ``static-best-pd`` answers), for comparison
    pd_factor: float | None = None
    pd_rate: float | None = None
    pd_split: Split | None = None
    pd_simulations: int | None = None


@dataclass
class _Runner:
    """Runs one spec on one scenario's load at (factor, seed), caching loads between specs."""

    source: LoadSource
    emulator_config: Any
    protocol: Protocol
    arrow_config: Any = None
    on_run: Callable[[str, float, float], None] | None = None
    mixed_config: Any = None     # the MIXED dispatcher's policy (``MixedConfig``; None: its defaults)
    runs: int = 0
    _loads: dict[tuple[float, int], Load] = field(default_factory=dict)

    def load(self, factor: float, seed: int) -> Load:
        key = (factor, seed)
        if key not in self._loads:
            if len(self._loads) > 8:
                self._loads.clear()
            self._loads[key] = build_load(self.source, factor, seed, self.protocol)
        return self._loads[key]

    def run(self, spec: str, factor: float, seed: int) -> tuple[float, float, float]:
        """(attainment, flips per minute, reach) of ``spec``; a run that cannot reach the target
        stops early, and ``reach`` is the fraction of the counted span it got through (1: all)."""
        load = self.load(factor, seed)
        policy = make_policy(spec, int(self.emulator_config.num_instances), arrow_config=self.arrow_config,
                             mixed_config=self.mixed_config)
        r = run_policy(load.workload, self.emulator_config, policy,
                       control_interval_s=self.protocol.control_interval_s, seed=seed,
                       count_from_s=load.count_from_s, stop_below=TARGET_ATTAINMENT)
        self.runs += 1
        if self.on_run is not None:
            self.on_run(spec, load.offered_rate, r.attainment)
        reach = 1.0
        if r.stopped_early and load.counted_span_s > 0:
            reach = min(1.0, max(0.0, (r.sim_end_s - load.count_from_s) / load.counted_span_s))
        return r.attainment, r.flips_per_min, reach


def _search(f: Callable[[float], float], protocol: Protocol, hint: float | None) -> tuple[float, dict[float, float]]:
    start = hint if hint and MIN_FACTOR <= hint <= protocol.ceiling_factor else 1.0
    growth = 1.0 + 3.0 * protocol.rel_tol if hint else 2.0
    res = find_serving_rate(f, 1.0, target=TARGET_ATTAINMENT, initial_scale=start, rel_tol=protocol.rel_tol,
                            min_scale=MIN_FACTOR, max_scale=protocol.ceiling_factor,
                            max_evals=protocol.max_evals, growth=growth)
    return res.scale, res.points


def search_seed(runner: _Runner, controller: str, seed: int, hint: float | None = None,
                around: SeedResult | None = None) -> SeedResult:
    """One seed's serving rate of ``controller`` (``static-best`` and ``static-best-pd`` included;
    ``around``: the first seed's result, whose best splits bound a later seed's static search)."""
    runs_before = runner.runs
    if controller in STATIC_BEST:
        return _search_static_best(runner, seed, hint, around, runs_before, mixed=controller == "static-best")
    flips: dict[float, float] = {}

    def f(k: float) -> float:
        att, fpm, _ = runner.run(controller, k, seed)
        flips[k] = fpm
        return att

    k, points = _search(f, runner.protocol, hint)
    return _result(runner, seed, k, points, flips.get(k, 0.0), runs_before)


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

    def search(self, splits: list[Split], hint: float | None,
               key: Callable[[Split], Any]) -> tuple[float, Split | None]:
        """Highest factor at which one of ``splits`` passes, and that split. ``key`` breaks ties
        among splits with no evidence yet (which to run first)."""

        def order() -> list[Split]:
            # most promising first: highest known pass, then furthest reach and best attainment
            return sorted(splits, key=lambda s: (-self.passed.get(s, 0.0), -self.last_reach.get(s, 1.0),
                                                 -self.last_att.get(s, 1.0), key(s)))

        def f(k: float) -> float:
            best = 0.0
            for s in order():
                if self.failed.get(s, float("inf")) <= k:
                    continue
                if self.passed.get(s, 0.0) >= k:  # passed at a higher load already: passes here (no run)
                    self.winner_at[k] = s
                    return TARGET_ATTAINMENT
                att, _, reach = self.runner.run(s.spec, k, self.seed)
                self.last_att[s], self.last_reach[s] = att, reach
                if att >= TARGET_ATTAINMENT:
                    self.passed[s] = max(self.passed.get(s, 0.0), k)
                    self.winner_at[k] = s
                    return att
                self.failed[s] = min(self.failed.get(s, float("inf")), k)
                best = max(best, att)
            return best

        k, points = _search(f, self.runner.protocol, hint)
        self.points.update(points)
        return k, self.winner_at.get(k) if k > 0 else None


def _search_static_best(runner: _Runner, seed: int, hint: float | None, around: SeedResult | None,
                        runs_before: int, mixed: bool = True) -> SeedResult:
    """``static-best`` (P:D:M) or ``static-best-pd`` (P/D only) at one seed (module docstring)."""
    n = int(runner.emulator_config.num_instances)
    u = _UnionSearch(runner, seed)
    # 1. P/D splits exactly as the P/D-only static-best searches them (same order, same hint), so
    #    the answer can only grow from here; unknown splits break ties toward the middle split.
    pd = pd_splits(n)
    pd_hint = hint
    if around is not None:
        pd_hint = around.pd_factor if around.pd_factor is not None else around.factor
        if around.pd_split is not None:
            pd = [s for s in pd if abs(s.p - around.pd_split.p) <= 1]
    k_pd, w_pd = u.search(pd, pd_hint, key=lambda s: (abs(s.p - n / 2), s.p))
    pd_runs = runner.runs - runs_before
    k, w = k_pd, w_pd
    if mixed:
        # 2. splits with a MIXED pool, started from the P/D answer (it passes there without a run):
        #    the coarse grid (first seed) or the first seed's winner and its neighbours (later ones),
        #    then refined around the winner until no untried neighbour beats it.
        if around is not None and around.best_split is not None:
            extra = [around.best_split, *neighbours(around.best_split, n)]
        else:
            extra = coarse_mixed(n)
        cands = list(dict.fromkeys(pd + extra))
        for _ in range(n * n):   # bounded: each round adds at least one split of the finite set
            centre = w if w is not None else Split(0, 0, n)
            k, w = u.search(cands, k if k > 0 else hint, key=lambda s: (s.distance(centre), s))
            centre = w if w is not None else centre
            fresh = [s for s in neighbours(centre, n) if s not in cands]
            if not fresh:
                break
            cands += fresh
    res = _result(runner, seed, k, u.points, 0.0, runs_before)
    res.best_split, res.pd_split, res.pd_factor, res.pd_simulations = w, w_pd, k_pd, pd_runs
    res.pd_rate = runner.load(k_pd, seed).offered_rate if k_pd > 0 else 0.0
    return res


def _result(runner: _Runner, seed: int, k: float, points: dict[float, float], fpm: float,
            runs_before: int) -> SeedResult:
    load = runner.load(k, seed) if k > 0 else None
    return SeedResult(seed=seed, factor=k, rate=load.offered_rate if load else 0.0,
                      at_ceiling=k >= runner.protocol.ceiling_factor * (1 - 1e-12), flips_per_min=fpm,
                      counted_span_s=load.counted_span_s if load else 0.0,
                      simulations=runner.runs - runs_before, points=points)


def search_controller(source: LoadSource, emulator_config: Any, controller: str, protocol: Protocol,
                      arrow_config: Any = None,
                      on_run: Callable[[str, float, float], None] | None = None,
                      mixed_config: Any = None) -> list[SeedResult]:
    """Every seed of ``protocol`` for one controller; later seeds start from the first's answer."""
    runner = _Runner(source, emulator_config, protocol, arrow_config, on_run, mixed_config)
    out: list[SeedResult] = []
    hint, around = None, None
    for seed in protocol.seeds:
        r = search_seed(runner, controller, seed, hint, around)
        out.append(r)
        if hint is None and r.factor > 0:
            hint, around = r.factor, r
    return out
