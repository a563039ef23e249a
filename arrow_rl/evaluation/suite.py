"""Run a scenario suite: every controller's serving rate on every scenario, per seed, compared in pairs.

One job per (scenario, controller) runs all of the protocol's seeds, each searched on its own
(``arrow_rl.evaluation.seeded_search``); ``static-oracle`` and ``static-tuned`` share one job (the
tuned split is cross-fitted on the oracle's per-seed winners). Jobs run through the evaluation's
one job loop (``arrow_rl.evaluation.jobs``), longest first: in this process, in spawned worker
processes (``--jobs``), or as Ray tasks (``backend="ray"``): the same jobs, the same results.

Controllers are compared in pairs on the same seeds (``arrow_rl.evaluation.paired``): each one
against Arrow, and each one against the best *deployable* rival on the scenario (the highest mean
rate among the deployable controllers other than itself). ``static-oracle`` and the clairvoyant
``oracle`` are not deployable: they are headroom lines, never a rival.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from arrow_rl.controllers.splits import Split, split_from_json
from arrow_rl.evaluation.crossing import MIN_FACTOR
from arrow_rl.evaluation.intervals import Interval, mean_ci95
from arrow_rl.evaluation.jobs import run_jobs
from arrow_rl.evaluation.paired import Paired, call_verdicts, geomean_interval, log_ratios, paired_ratio
from arrow_rl.evaluation.protocol import MIN_TRUSTED_SPAN_S
from arrow_rl.evaluation.seeded_search import (RENAMED, STATIC_FAMILY, STATIC_ORACLE, SeedResult, make_runner,
                                               search_controller, search_static)
from arrow_rl.evaluation.suite_spec import Scenario, Suite

BASELINE = "arrow"
BEST_DEPLOYABLE = "best_deployable"


def is_deployable(controller: str) -> bool:
    """Whether a deployed system could run this controller (the oracles pick with hindsight)."""
    return controller != STATIC_ORACLE and controller.split(":")[0] != "oracle"


@dataclass
class ControllerOutcome:
    """One controller on one scenario: per-seed results and their (unpaired) interval."""

    controller: str
    seeds: list[SeedResult]
    interval: Interval
    wall_s: float
    cpu_s: float = 0.0

    @property
    def flips_per_min(self) -> float:
        return sum(s.flips_per_min for s in self.seeds) / len(self.seeds)

    @property
    def best_split(self) -> Split | None:
        """The split that won most seeds (ties: the first seed's order)."""
        splits = [s.best_split for s in self.seeds if s.best_split is not None]
        return max(dict.fromkeys(splits), key=splits.count) if splits else None

    @property
    def counted_span_s(self) -> float:
        spans = [s.counted_span_s for s in self.seeds if s.counted_span_s > 0]
        return min(spans) if spans else 0.0

    def rates_by_seed(self) -> dict[int, float]:
        return {s.seed: s.rate for s in self.seeds}


def outcome_of(controller: str, seeds: list[SeedResult], wall_s: float = 0.0, cpu_s: float = 0.0) -> ControllerOutcome:
    return ControllerOutcome(controller, seeds, mean_ci95([s.rate for s in seeds], at_ceiling=any(s.at_ceiling for s in seeds)),
                             wall_s, cpu_s)


@dataclass
class ScenarioOutcome:
    scenario: Scenario
    controllers: dict[str, ControllerOutcome]
    # controllers that cannot run this scenario (``ControllerMismatch``: e.g. a checkpoint trained
    # for 8 instances on a 16-instance scenario), with the reason; they are in no ranking here
    not_applicable: dict[str, str] = field(default_factory=dict)
    # filled by ``SuiteResult.compare_pairs``: controller -> {"arrow" | "best_deployable": Paired}
    paired: dict[str, dict[str, Paired]] = field(default_factory=dict)
    rivals: dict[str, str] = field(default_factory=dict)    # controller -> its best deployable rival

    @property
    def floor_rate(self) -> float:
        """Rates of 0 are floored here before a log-ratio: the search's lowest probed load."""
        return self.scenario.source.base_rate * MIN_FACTOR

    def best_deployable(self, exclude: str | None = None) -> str | None:
        cands = [c for c in self.controllers if is_deployable(c) and c != exclude]
        return max(cands, key=lambda c: self.controllers[c].interval.mean) if cands else None

    def raw_pair(self, a: str, b: str) -> Paired:
        """``a`` against ``b`` on the seeds both have, before any multiple-testing correction."""
        ra, rb = self.controllers[a].rates_by_seed(), self.controllers[b].rates_by_seed()
        seeds = [s for s in ra if s in rb]
        ceil = ("a" if self.controllers[a].interval.at_ceiling else "") + ("b" if self.controllers[b].interval.at_ceiling else "")
        return paired_ratio([ra[s] for s in seeds], [rb[s] for s in seeds], self.floor_rate, ceil)

    def log_ratios_to(self, a: str, b: str) -> np.ndarray:
        ra, rb = self.controllers[a].rates_by_seed(), self.controllers[b].rates_by_seed()
        seeds = [s for s in ra if s in rb]
        return log_ratios([ra[s] for s in seeds], [rb[s] for s in seeds], self.floor_rate)

    @property
    def winners(self) -> list[str]:
        """The deployable controllers that cannot be told apart from the best one (paired verdicts
        against their best rival); one name is a sole win. Without paired verdicts (a lone
        controller) the best one."""
        best = self.best_deployable()
        if best is None:
            return []
        tied = [c for c in self.controllers if is_deployable(c) and c != best
                and self.paired.get(c, {}).get(BEST_DEPLOYABLE) is not None
                and self.paired[c][BEST_DEPLOYABLE].verdict != "loss"]
        return [best, *tied]

    @property
    def verdict(self) -> str:
        w = self.winners
        return w[0] if len(w) == 1 else "tie: " + ", ".join(w)

    @property
    def short_span(self) -> bool:
        spans = [c.counted_span_s for c in self.controllers.values() if c.counted_span_s > 0]
        return bool(spans) and min(spans) < MIN_TRUSTED_SPAN_S

    def ratio_to(self, controller: str, baseline: str = BASELINE) -> float | None:
        """Paired ratio (exp of the mean per-seed log-ratio) of ``controller`` to ``baseline``."""
        if baseline not in self.controllers or controller not in self.controllers:
            return None
        if controller == baseline:
            return 1.0
        return self.raw_pair(controller, baseline).ratio


@dataclass
class SuiteResult:
    suite: Suite
    controllers: list[str]
    scenarios: dict[str, ScenarioOutcome]
    quick: bool
    wall_s: float = 0.0
    cpu_s: float = 0.0
    simulations: int = 0
    settings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.compare_pairs()

    def compare_pairs(self) -> None:
        """Paired verdicts of every controller against Arrow and against its best deployable rival,
        Holm-corrected within each (controller, comparison, split) family."""
        families: dict[tuple[str, str, str], list[tuple[ScenarioOutcome, Paired]]] = {}
        for sc in self.scenarios.values():
            sc.paired, sc.rivals = {}, {}
            for c in sc.controllers:
                pairs: dict[str, Paired] = {}
                if c != BASELINE and BASELINE in sc.controllers:
                    pairs[BASELINE] = sc.raw_pair(c, BASELINE)
                rival = sc.best_deployable(exclude=c)
                if rival is not None:
                    sc.rivals[c] = rival
                    pairs[BEST_DEPLOYABLE] = sc.raw_pair(c, rival)
                for kind, p in pairs.items():
                    families.setdefault((c, kind, sc.scenario.split), []).append((sc, p))
                sc.paired[c] = pairs
        for (c, kind, _), members in families.items():
            called = call_verdicts([p for _, p in members])
            for (sc, _), p in zip(members, called):
                sc.paired[c][kind] = p

    def summary(self, split: str | None = None) -> dict[str, dict]:
        """Per controller over the scenarios of ``split`` (None: all): the geometric mean of its paired
        ratio to Arrow with a hierarchical-bootstrap 95% interval, and wins/ties/losses from the
        paired verdicts against the best deployable rival (``vs_arrow``: against Arrow)."""
        out: dict[str, dict] = {}
        scen = [sc for sc in self.scenarios.values() if split is None or sc.scenario.split == split]
        for i, c in enumerate(self.controllers):
            groups, counts, vs_arrow, na = [], {"win": 0, "tie": 0, "loss": 0}, {"win": 0, "tie": 0, "loss": 0}, 0
            for sc in scen:
                if c not in sc.controllers:
                    na += c in sc.not_applicable
                    continue
                if BASELINE in sc.controllers:
                    groups.append(sc.log_ratios_to(c, BASELINE))
                pairs = sc.paired.get(c, {})
                if BEST_DEPLOYABLE in pairs:
                    counts[pairs[BEST_DEPLOYABLE].verdict] += 1
                if BASELINE in pairs:
                    vs_arrow[pairs[BASELINE].verdict] += 1
            geo = geomean_interval(groups, seed=i) if groups and BASELINE in self.controllers else (None, None, None)
            out[c] = {"geomean_ratio_to_arrow": geo[0], "ci95": [geo[1], geo[2]] if geo[0] is not None else None,
                      "wins": counts["win"], "ties": counts["tie"], "losses": counts["loss"], "not_applicable": na,
                      "vs_arrow": {"wins": vs_arrow["win"], "ties": vs_arrow["tie"], "losses": vs_arrow["loss"]},
                      "deployable": is_deployable(c)}
        return out

    def splits(self) -> list[str]:
        return list(dict.fromkeys(sc.scenario.split for sc in self.scenarios.values()))

    def to_json(self) -> dict:
        scenarios: dict[str, Any] = {}
        for name, sc in self.scenarios.items():
            ctrls: dict[str, Any] = {}
            for c, o in sc.controllers.items():
                iv = o.interval
                entry: dict[str, Any] = {
                    "serving_rate": iv.mean,
                    "ci95": [iv.lo, iv.hi if math.isfinite(iv.hi) else None],
                    "per_seed": [s.rate for s in o.seeds],
                    "brackets": [[s.bracket[0], s.bracket[1] if math.isfinite(s.bracket[1]) else None] for s in o.seeds],
                    "flips_per_min": o.flips_per_min,
                    "at_ceiling": iv.at_ceiling,
                    "ratio_to_arrow": sc.ratio_to(c),
                    "deployable": is_deployable(c),
                    "paired": {k: p.to_json() | ({"rival": sc.rivals[c]} if k == BEST_DEPLOYABLE else {})
                               for k, p in sc.paired.get(c, {}).items()},
                    "simulations": sum(s.simulations for s in o.seeds),
                    "cpu_s": o.cpu_s,
                }
                if o.best_split is not None:   # an integer P for a P/D split (the old format), else "P:D:M"
                    entry["best_split"] = o.best_split.to_json()
                    entry["best_split_label"] = o.best_split.label
                    entry["per_seed_split"] = [_split_json(s.best_split) for s in o.seeds]
                entry["seeds"] = [_seed_json(s) for s in o.seeds]
                entry["wall_s"] = o.wall_s
                ctrls[c] = entry
            s = sc.scenario
            scenarios[name] = {
                "split": s.split, "controllers": ctrls, "winner": sc.verdict,
                "workload": s.workload_label, "preset": s.emulator_config.preset,
                "instances": s.emulator_config.num_instances, "slo_tier": s.slo_tier,
                "slo": {"ttft_s": s.emulator_config.slo_ttft_s, "tpot_s": s.emulator_config.slo_tpot_s},
                "counted_span_s": min((o.counted_span_s for o in sc.controllers.values()), default=0.0),
                "short_span": sc.short_span, "protocol": s.protocol.describe(),
            }
            if sc.not_applicable:
                scenarios[name]["not_applicable"] = dict(sc.not_applicable)
        return {"suite": self.suite.name, "quick": self.quick, "scenarios": scenarios, "summary": self.summary(),
                "summary_by_split": {sp: self.summary(sp) for sp in self.splits()},
                "settings": self.settings | {"protocol": self.suite.protocol.describe(),
                                             "wall_s": self.wall_s, "cpu_s": self.cpu_s,
                                             "simulations": self.simulations}}


def result_from_json(payload: dict, suite: Suite, source: str = "suite JSON") -> SuiteResult:
    """Rebuild a ``SuiteResult`` from ``to_json`` output, to render tables, plots and Markdown again
    without re-running (``arrow-rl suite report``). ``suite`` supplies the scenario definitions; a
    scenario of the JSON that the suite lacks is an error naming it, and so is a file written by
    the earlier protocol (no per-seed brackets: its rates are bisection low ends, not crossings)."""
    try:
        scen_json: dict = payload["scenarios"]
        settings = dict(payload.get("settings") or {})
        quick = bool(payload.get("quick", False))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{source}: not an arrow-rl suite result (missing {exc})") from exc
    by_name = {sc.name: sc for sc in suite.scenarios}
    unknown = [n for n in scen_json if n not in by_name]
    if unknown:
        raise ValueError(f"{source}: scenario(s) {', '.join(unknown)} are not in suite {suite.name}")
    controllers: list[str] = list(settings.get("controllers") or [])
    outcomes: dict[str, ScenarioOutcome] = {}
    sims = 0
    for name, sj in scen_json.items():
        row: dict[str, ControllerOutcome] = {}
        n = int(by_name[name].emulator_config.num_instances)
        for c, e in sj["controllers"].items():
            if c not in controllers:
                controllers.append(c)
            if "brackets" not in e:
                raise ValueError(f"{source}: scenario {name!r} controller {c!r} comes from the earlier suite protocol "
                                 "(no per-seed brackets); re-run it with `arrow-rl suite run`")
            seeds = [SeedResult(int(d["seed"]), float(d["factor"]), float(d["rate"]), bool(d["at_ceiling"]),
                                float(d["flips_per_min"]), float(d["counted_span_s"]), int(d["simulations"]),
                                split_from_json(d.get("best_split"), n, f"{source}: {name}: {c}"),
                                {float(k): float(v) for k, v in (d.get("points") or {}).items()},
                                (float(d["bracket"][0]), math.inf if d["bracket"][1] is None else float(d["bracket"][1])))
                     for d in e["seeds"]]
            sims += sum(x.simulations for x in seeds)
            row[c] = outcome_of(c, seeds, float(e.get("wall_s", 0.0)), float(e.get("cpu_s", 0.0)))
        na = {str(c): str(why) for c, why in (sj.get("not_applicable") or {}).items()}
        for c in na:
            if c not in controllers:
                controllers.append(c)
        outcomes[name] = ScenarioOutcome(by_name[name], row, na)
    kept = Suite(suite.name, suite.path, suite.description, [by_name[n] for n in scen_json], suite.protocol)
    return SuiteResult(kept, controllers, outcomes, quick, wall_s=float(settings.get("wall_s", 0.0)),
                       cpu_s=float(settings.get("cpu_s", 0.0)), simulations=int(settings.get("simulations", sims)),
                       settings=settings)


def merge_result_payloads(payloads: list[tuple[dict, str]], replace: bool = False) -> dict:
    """Merge saved ``suite run --json`` results into one (``suite report --json A --json B``): a
    controller run later (a new checkpoint) joins a leaderboard without re-running the others.

    Every file must come from the same suite, quick flag and protocol (seeds, spans, warm-up, rate
    mode): only then are the cells comparable, and, the suite being deterministic, the merged file
    holds what one run of all the controllers would have measured. A (scenario, controller) pair in
    two files is an error naming both, so nothing is silently overwritten, unless ``replace``: then
    the later file's cell replaces the earlier one (a checkpoint retrained at the same path), and
    the replaced cell's simulations and CPU time leave the cost. Costs add up."""
    if not payloads:
        raise ValueError("no suite results to merge")
    first, first_src = payloads[0]
    merged = {"suite": first.get("suite"), "quick": first.get("quick", False), "scenarios": {}, "settings": {}}
    owner: dict[tuple[str, str], str] = {}
    controllers: list[str] = []
    totals = {"wall_s": 0.0, "cpu_s": 0.0, "simulations": 0}
    for payload, src in payloads:
        settings = _mergeable_settings(payload, src, merged, dict(first.get("settings") or {}), first_src)
        for c in settings.get("controllers") or []:
            if c not in controllers:
                controllers.append(c)
        _merge_cells(merged, payload, src, owner, controllers, totals, replace)
        for k in totals:
            totals[k] += type(totals[k])(settings.get(k, 0) or 0)
        for k in ("protocol", "rate_mode", "warmup_s", "jobs", "backend"):
            if k in settings and k not in merged["settings"]:
                merged["settings"][k] = settings[k]
    subset = any((p.get("settings") or {}).get("scenarios") for p, _ in payloads)
    merged["settings"] |= totals | {"controllers": controllers, "merged_from": len(payloads),
                                    "scenarios": list(merged["scenarios"]) if subset else None}
    return merged


def _mergeable_settings(payload: Any, src: str, merged: dict, first_settings: dict, first_src: str) -> dict:
    """``payload``'s settings, once it is known to be a suite result of the same suite, quick flag
    and protocol as the first file (else a ValueError naming both files)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("scenarios"), dict):
        raise ValueError(f"{src}: not an arrow-rl suite result (no 'scenarios' object)")
    settings = dict(payload.get("settings") or {})
    for k in ("suite", "quick"):
        if payload.get(k, False if k == "quick" else None) != merged[k]:
            raise ValueError(f"{src}: {k} {payload.get(k)!r} differs from {first_src}'s {merged[k]!r}; "
                             "only results of the same suite and protocol can be merged")
    for k in ("protocol", "rate_mode", "warmup_s"):
        if settings.get(k) != first_settings.get(k):
            raise ValueError(f"{src}: settings.{k} {settings.get(k)!r} differs from {first_src}'s "
                             f"{first_settings.get(k)!r}; only results of the same suite and protocol can be merged")
    return settings


def _merge_cells(merged: dict, payload: dict, src: str, owner: dict[tuple[str, str], str], controllers: list[str],
                 totals: dict[str, Any], replace: bool) -> None:
    """Add ``payload``'s (scenario, controller) cells to ``merged``; a cell already there is an error
    naming both files, unless ``replace`` (then the replaced cell's cost leaves ``totals``)."""
    for name, sj in payload["scenarios"].items():
        row = merged["scenarios"].setdefault(name, {k: v for k, v in sj.items() if k not in ("controllers", "not_applicable")}
                                            | {"controllers": {}})
        for c, entry in (sj.get("controllers") or {}).items():
            if (name, c) in owner:
                if not replace:
                    raise ValueError(f"{src}: scenario {name!r} controller {c!r} is also in {owner[(name, c)]}; "
                                     "merge results of different controllers only (or let later files replace)")
                old_entry = row["controllers"][c]
                totals["simulations"] -= int(old_entry.get("simulations", 0) or 0)
                totals["cpu_s"] -= float(old_entry.get("cpu_s", 0.0) or 0.0)
            owner[(name, c)] = src
            row["controllers"][c] = entry
            if c not in controllers:
                controllers.append(c)
        for c, why in (sj.get("not_applicable") or {}).items():
            row.setdefault("not_applicable", {})[c] = why


def _split_json(s: Split | None) -> int | str | None:
    return None if s is None else s.to_json()


def _seed_json(s: SeedResult) -> dict[str, Any]:
    return {"seed": s.seed, "factor": s.factor, "rate": s.rate, "at_ceiling": s.at_ceiling,
            "bracket": [s.bracket[0], s.bracket[1] if math.isfinite(s.bracket[1]) else None],
            "points": {f"{k:.6g}": v for k, v in sorted(s.points.items())},
            "flips_per_min": s.flips_per_min, "counted_span_s": s.counted_span_s,
            "simulations": s.simulations, "best_split": _split_json(s.best_split)}


STATIC_JOB = "static"   # one job measures both static-oracle and static-tuned (cross-fitting needs both)
JobResult = tuple[dict[str, list[SeedResult]], float, float]   # (per-name seed results, wall s, CPU s)


def _job(scenario: Scenario, controller: str, speedup: float, arrow_config: Any,
         notify: Callable | None) -> JobResult:
    """One (scenario, controller) job: {controller name: per-seed results} (two names for ``static``);
    ``speedup``: on instances that much faster than the scenario's (a ``Variant``)."""
    t0, c0 = time.perf_counter(), time.process_time()
    preset = None
    if speedup != 1.0:
        from arrow_rl.perf.presets import get_preset

        emu = scenario.emulator_config
        preset = get_preset(emu.preset, gpu_memory_utilization=emu.gpu_memory_utilization).sped_up(speedup)
    on_run = None
    if notify is not None:
        def on_run(spec: str, rate: float, att: float) -> None:
            notify(scenario.name, spec, rate, att)
    if controller == STATIC_JOB:
        runner = make_runner(scenario.source, scenario.emulator_config, scenario.protocol, arrow_config=arrow_config,
                             on_run=on_run, preset=preset)
        out = search_static(runner, scenario.protocol.seeds)
    else:
        out = {controller: search_controller(scenario.source, scenario.emulator_config, controller, scenario.protocol,
                                             arrow_config=arrow_config, on_run=on_run, preset=preset)}
    return out, time.perf_counter() - t0, time.process_time() - c0


def _cost_rank(scenario: Scenario, controller: str) -> float:
    """Rough relative cost, to start the longest jobs first (the static job searches many splits)."""
    n = scenario.emulator_config.num_instances
    return n * (5.0 if controller == STATIC_JOB else 1.0)


@dataclass(frozen=True)
class Variant:
    """A controller run under another name: ``spec`` on instances ``speedup`` times faster than the
    scenario's preset (``Preset.sped_up``). The suite's power check compares a controller with
    itself on faster instances this way (``arrow_rl.evaluation.power``)."""

    spec: str
    speedup: float = 1.0


def _job_name(controller: str) -> str:
    return STATIC_JOB if controller in STATIC_FAMILY else controller


def run_suite(suite: Suite, controllers: list[str], *, jobs: int = 1, quick: bool = False,
              on_job_done: Callable[[str, str, float], None] | None = None,
              on_run: Callable[[str, str, float, float], None] | None = None,
              backend: str = "local", ray_address: str | None = None,
              variants: dict[str, Variant] | None = None, arrow_config: Any = None) -> SuiteResult:
    """Measure every controller on every scenario of ``suite``. ``backend``: ``local`` (``jobs``
    worker processes) or ``ray`` (one Ray task per job on the cluster at ``ray_address``, a
    private local Ray when None; ``jobs`` is then unused: Ray runs as many as it has CPUs).
    ``variants``: names among ``controllers`` that stand for another spec and/or faster instances;
    ``arrow_config``: Arrow's constants for every policy that routes with Algorithm 1 (default: the
    paper's defaults)."""
    variants = dict(variants or {})
    names = _checked_names(controllers)
    unfit = _misfits(suite, names, variants)
    job_names = list(dict.fromkeys(_job_name(c) for c in names))
    tasks = sorted(((sc, c) for sc in suite.scenarios for c in job_names if (sc.name, c) not in unfit),
                   key=lambda t: -_cost_rank(*t))
    calls = [((sc.name, c), (sc, _spec_of(c, variants), variants[c].speedup if c in variants else 1.0, arrow_config))
             for sc, c in tasks]
    t0, c0 = time.perf_counter(), time.process_time()
    done: dict[tuple[str, str], JobResult] = run_jobs(  # type: ignore[assignment]
        _job, calls, jobs=jobs, backend=backend, ray_address=ray_address, progress=on_run,
        on_done=(lambda key, res: on_job_done(key[0], key[1], res[1])) if on_job_done else None,
        describe_error=_describe_job_error, shared=(0,))
    outcomes, sims = _outcomes(suite, names, variants, unfit, done)
    wall = time.perf_counter() - t0
    in_process = jobs <= 1 and backend != "ray"
    cpu = time.process_time() - c0 if in_process else sum(v[2] for v in done.values())
    settings = {"jobs": jobs, "controllers": names} | ({"backend": backend} if backend != "local" else {})
    return SuiteResult(suite, names, outcomes, quick, wall_s=wall, cpu_s=cpu, simulations=sims, settings=settings)


def _checked_names(controllers: list[str]) -> list[str]:
    """The controller names, stripped; none, a repeated one or a renamed one is refused."""
    names = [c.strip() for c in controllers if c.strip()]
    if not names:
        raise ValueError("no controllers given")
    if len(set(names)) != len(names):
        raise ValueError(f"controller listed twice in {names}")
    for c in names:
        if c in RENAMED:
            raise ValueError(f"controller {c!r} was renamed: use {RENAMED[c]}")
    return names


def _spec_of(controller: str, variants: dict[str, Variant]) -> str:
    return variants[controller].spec if controller in variants else controller


def _misfits(suite: Suite, names: list[str], variants: dict[str, Variant]) -> dict[tuple[str, str], str]:
    """{(scenario, controller): why it cannot run there}; an unknown controller is refused here,
    before any simulation."""
    unfit: dict[tuple[str, str], str] = {}
    for sc in suite.scenarios:
        for c in names:
            if c in STATIC_FAMILY:
                continue
            why = controller_misfit(sc, _spec_of(c, variants))
            if why is not None:
                unfit[(sc.name, c)] = why
    return unfit


def _describe_job_error(key: Any, exc: Exception) -> Exception:
    """A job's ValueError (a user's mistake) names its scenario and controller; anything else is a bug."""
    return ValueError(f"scenario {key[0]}, controller {key[1]}: {exc}") if isinstance(exc, ValueError) else exc


def _outcomes(suite: Suite, names: list[str], variants: dict[str, Variant], unfit: dict[tuple[str, str], str],
              done: dict[tuple[str, str], JobResult]) -> tuple[dict[str, ScenarioOutcome], int]:
    """Every scenario's outcomes from the finished jobs, and the simulations they ran."""
    outcomes: dict[str, ScenarioOutcome] = {}
    sims = 0
    for sc in suite.scenarios:
        row: dict[str, ControllerOutcome] = {}
        charged: set[str] = set()   # a shared job's cost is charged to the first name it serves
        for c in names:
            job = _job_name(c)
            if (sc.name, job) in unfit or (sc.name, c) in unfit:
                continue
            results, wall, job_cpu = done[(sc.name, job)]
            seeds = results[c if c in results else _spec_of(c, variants)]
            first = job not in charged
            charged.add(job)
            if first:
                sims += sum(s.simulations for r in results.values() for s in r)
            row[c] = outcome_of(c, seeds, wall, job_cpu if first else 0.0)
        outcomes[sc.name] = ScenarioOutcome(sc, row, {c: why for (n, c), why in unfit.items() if n == sc.name})
    return outcomes, sims


def controller_misfit(scenario: Scenario, controller: str) -> str | None:
    """Why ``controller`` cannot run ``scenario`` (``ControllerMismatch`` from its ``reset`` on the
    scenario's cluster), or None when it can. Any other error (an unknown controller, a broken
    checkpoint) propagates: that is the user's mistake, not a property of the scenario."""
    from arrow_rl.control import ControllerMismatch
    from arrow_rl.controllers.registry import expand_spec, make_policy
    from arrow_rl.evaluation.runner import build_cluster
    from arrow_rl.workload.workload import Workload

    import numpy as np

    n = int(scenario.emulator_config.num_instances)
    probe = Workload(np.zeros(1), np.ones(1, dtype=np.int64), np.ones(1, dtype=np.int64), name="probe")
    for spec in expand_spec(controller, n):
        policy = make_policy(spec, n)
        if policy.controller is None:
            continue
        try:
            policy.controller.reset(build_cluster(probe, scenario.emulator_config, policy, seed=0).info)
        except ControllerMismatch as exc:
            return str(exc)
    return None

