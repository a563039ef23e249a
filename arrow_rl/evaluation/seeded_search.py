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
its two neighbours (a documented choice).

Every run stops as soon as it cannot reach the target (``run_policy(stop_below=...)``): a search
needs only pass/fail, and an overloaded run costs 10–20× a passing one if played to the end. The
attainments kept for failed factors are therefore upper bounds (all below the target).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from arrow_rl.controllers.registry import expand_spec, make_policy
from arrow_rl.evaluation.protocol import Load, LoadSource, Protocol, build_load
from arrow_rl.evaluation.runner import run_policy
from arrow_rl.metrics.serving_rate import TARGET_ATTAINMENT, find_serving_rate

MIN_FACTOR = 1.0 / 64


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
    best_split: int | None = None
    points: dict[float, float] = field(default_factory=dict)  # factor -> attainment (union for static-best)


@dataclass
class _Runner:
    """Runs one spec on one scenario's load at (factor, seed), caching loads between specs."""

    source: LoadSource
    emulator_config: Any
    protocol: Protocol
    arrow_config: Any = None
    on_run: Callable[[str, float, float], None] | None = None
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
        policy = make_policy(spec, int(self.emulator_config.num_instances), arrow_config=self.arrow_config)
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
                around: int | None = None) -> SeedResult:
    """One seed's serving rate of ``controller`` (``static-best`` included; ``around``: search
    only that split and its neighbours)."""
    n = int(runner.emulator_config.num_instances)
    runs_before = runner.runs
    if controller == "static-best":
        splits = [int(s.split(":")[1]) for s in expand_spec(controller, n)]
        if around is not None:
            splits = [p for p in splits if abs(p - around) <= 1]
        return _search_static_best(runner, splits, seed, hint, runs_before)
    flips: dict[float, float] = {}

    def f(k: float) -> float:
        att, fpm, _ = runner.run(controller, k, seed)
        flips[k] = fpm
        return att

    k, points = _search(f, runner.protocol, hint)
    return _result(runner, seed, k, points, flips.get(k, 0.0), runs_before)


def _search_static_best(runner: _Runner, splits: list[int], seed: int, hint: float | None,
                        runs_before: int) -> SeedResult:
    n = int(runner.emulator_config.num_instances)
    passed: dict[int, float] = {}  # split -> highest factor it passed at
    failed: dict[int, float] = {}  # split -> lowest factor it failed at
    last_att: dict[int, float] = {}
    last_reach: dict[int, float] = {}
    winner_at: dict[float, int] = {}

    def order() -> list[int]:
        # most promising first: highest known pass, then furthest reach and best attainment; unknown splits
        # break ties toward the middle split (no prior on which side wins).
        return sorted(splits, key=lambda p: (-passed.get(p, 0.0), -last_reach.get(p, 1.0), -last_att.get(p, 1.0),
                                             abs(p - n / 2), p))

    def f(k: float) -> float:
        best = 0.0
        for p in order():
            if failed.get(p, float("inf")) <= k:
                continue
            if passed.get(p, 0.0) >= k:  # passed at a higher load already: passes here (no run)
                winner_at[k] = p
                return TARGET_ATTAINMENT
            att, _, reach = runner.run(f"static:{p}", k, seed)
            last_att[p], last_reach[p] = att, reach
            if att >= TARGET_ATTAINMENT:
                passed[p] = max(passed.get(p, 0.0), k)
                winner_at[k] = p
                return att
            failed[p] = min(failed.get(p, float("inf")), k)
            best = max(best, att)
        return best

    k, points = _search(f, runner.protocol, hint)
    res = _result(runner, seed, k, points, 0.0, runs_before)
    res.best_split = winner_at.get(k)
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
                      on_run: Callable[[str, float, float], None] | None = None) -> list[SeedResult]:
    """Every seed of ``protocol`` for one controller; later seeds start from the first's answer."""
    runner = _Runner(source, emulator_config, protocol, arrow_config, on_run)
    out: list[SeedResult] = []
    hint, around = None, None
    for seed in protocol.seeds:
        r = search_seed(runner, controller, seed, hint, around)
        out.append(r)
        if hint is None and r.factor > 0:
            hint, around = r.factor, r.best_split
    return out
