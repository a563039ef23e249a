"""Compare several policies on one workload, preset and SLO pair (Arrow §6.1 methodology).

Each policy gets its own serving-rate sweep (rate-scale search); sweeps run in parallel worker
processes, or as Ray tasks (``backend="ray"``, ``arrow_rl.evaluation.ray_backend``).
``static-best-pd`` sweeps every P/D split (``static:1..N-1``) and reports the best one;
``static-best`` also sweeps splits with a MIXED pool, coarse to fine (``_static_best_mixed``), and
reports the best of all, a P/D split on a tie (so never below ``static-best-pd``).
"""

from __future__ import annotations

import math
import queue as queue_mod
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable

from arrow_rl.arrow.config import ArrowConfig
from arrow_rl.controllers.baselines import DynamoConfig, OracleConfig
from arrow_rl.controllers.registry import expand_spec, make_policy
from arrow_rl.controllers.splits import Split, coarse_mixed, neighbours
from arrow_rl.evaluation.runner import RunResult
from arrow_rl.evaluation.serving_rate import SweepResult, SweepSettings, run_spec_at_scale, sweep_policy
from arrow_rl.workload.workload import Workload


@dataclass
class ControllerResult:
    """One row of the comparison (``static-best`` aggregates its splits)."""

    name: str
    serving_rate: float
    serving_scale: float
    attainment: dict[float, float]
    flips_per_min: float
    best_split: Split | None = None
    splits: dict[Split, float] = field(default_factory=dict)
    sweeps: list[SweepResult] = field(default_factory=list)

    def attainment_at(self, rate: float) -> float | None:
        for r, a in self.attainment.items():
            if math.isclose(r, rate, rel_tol=1e-9):
                return a
        return None


@dataclass
class EvaluationResult:
    workload: str
    base_rate: float
    reference_rate: float
    controllers: dict[str, ControllerResult]
    settings: dict
    timeline: RunResult | None = None
    timeline_controller: str | None = None
    timeline_scale: float | None = None   # rate scale of the timeline run (trace timestamps ÷ it)

    def ratio_to(self, name: str, baseline: str = "arrow") -> float | None:
        if baseline not in self.controllers:
            return None
        b = self.controllers[baseline].serving_rate
        return self.controllers[name].serving_rate / b if b > 0 else None

    def to_json(self) -> dict:
        out: dict[str, Any] = {"workload": self.workload, "base_rate": self.base_rate,
                               "reference_rate": self.reference_rate, "settings": self.settings, "controllers": {}}
        for name, c in self.controllers.items():
            entry: dict[str, Any] = {
                "serving_rate": c.serving_rate,
                "serving_rate_scale": c.serving_scale,
                # lowest evaluated rate above the serving rate that failed: the search's resolution
                "first_failing_rate": min((r for r, a in c.attainment.items()
                                           if r > c.serving_rate and a < self.settings.get("target_attainment", 0.9)),
                                          default=None),
                "attainment": {f"{r:.6g}": a for r, a in sorted(c.attainment.items())},
                "flips_per_min": c.flips_per_min,
                "ratio_to_arrow": self.ratio_to(name),
                "attainment_at_reference_rate": c.attainment_at(self.reference_rate),
            }
            if c.best_split is not None:   # an integer P for a P/D split (the old format), else "P:D:M"
                entry["best_split"] = c.best_split.to_json()
                entry["best_split_label"] = c.best_split.label
                entry["splits"] = {str(p.to_json()): r for p, r in sorted(c.splits.items())}
            out["controllers"][name] = entry
        return out


def split_of_spec(spec: str, n: int) -> Split:
    """``static:P`` → P:(N−P):0, ``static:P:D:M`` → P:D:M."""
    parts = [int(x) for x in spec.split(":")[1:]]
    return Split(parts[0], n - parts[0], 0) if len(parts) == 1 else Split(*parts)


def _static_rank(s: SweepResult, n: int) -> tuple:
    """Best rate; ties go to a P/D split (today's answer), then toward the middle prefill count."""
    if not s.spec.startswith("static:"):
        return (s.serving_rate,)
    split = split_of_spec(s.spec, n)
    return (s.serving_rate, split.m == 0, -abs(split.p - n / 2), -split.m)


def _static_best_mixed(n: int, results: dict[str, SweepResult],
                       run_sweeps: Callable[[list[str]], dict[str, SweepResult]]) -> list[str]:
    """Sweep the coarse grid of splits with a MIXED pool, then the neighbours of the best split
    until none is left untried (docs/evaluation.md); ``results`` gains every sweep. Returns every
    split spec swept for ``static-best``, the P/D ones first."""
    specs = expand_spec("static-best", n)
    fresh = [s.spec for s in coarse_mixed(n) if s.spec not in results]
    while fresh:
        results.update(run_sweeps(fresh))
        specs += [s for s in fresh if s not in specs]
        best = split_of_spec(max((results[s] for s in specs), key=lambda r: _static_rank(r, n)).spec, n)
        fresh = [s.spec for s in neighbours(best, n) if s.spec not in specs]
    return specs


def _process_pool(jobs: int) -> ProcessPoolExecutor:
    """Worker pool for sweeps. Spawned, not forked: a forked child of a process whose torch/OpenMP
    thread pool is already running can spin for minutes in torch's first parallel op (seen when a
    checkpoint controller initialises its network); one compute thread per worker."""
    import multiprocessing as mp

    return ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker)


def _init_worker() -> None:
    import os

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"


class _Notifier:
    """Picklable progress hook: worker processes post (spec, scale, attainment) to a queue."""

    def __init__(self, q: Any) -> None:
        self.q = q

    def __call__(self, spec: str, scale: float, attainment: float) -> None:
        self.q.put((spec, scale, attainment))


def _sweep_job(workload: Workload, emulator_config: Any, spec: str, settings: SweepSettings,
               arrow_config: ArrowConfig | None, dynamo_config: DynamoConfig | None,
               oracle_config: OracleConfig | None, notify: Callable | None) -> SweepResult:
    return sweep_policy(workload, emulator_config, spec, settings, arrow_config, dynamo_config, oracle_config,
                        on_point=notify)


def evaluate(
    workload: Workload,
    emulator_config: Any,
    controllers: list[str],
    settings: SweepSettings | None = None,
    *,
    arrow_config: ArrowConfig | None = None,
    dynamo_config: DynamoConfig | None = None,
    oracle_config: OracleConfig | None = None,
    jobs: int = 1,
    reference_rate: float | None = None,
    timeline_controller: str | None = None,
    progress: Callable[[str, float, float], None] | None = None,
    backend: str = "local",
    ray_address: str | None = None,
) -> EvaluationResult:
    """Sweep every controller and assemble the comparison.

    ``reference_rate`` (req/s) is evaluated for every controller (default: the trace's own rate
    times ``settings.initial_scale``, which every sweep evaluates anyway). ``timeline_controller``
    gets one extra run at its serving rate with the per-interval timeline recorded. ``backend``:
    ``local`` (``jobs`` processes) or ``ray`` (one Ray task per sweep, at ``ray_address``).
    """
    settings = settings or SweepSettings()
    n = int(emulator_config.num_instances)
    names = [c.strip() for c in controllers if c.strip()]
    if not names:
        raise ValueError("no controllers given")
    if len(set(names)) != len(names):
        raise ValueError(f"controller listed twice in {names}")
    for name in names:  # validate every spec before spending any simulation time
        for spec in expand_spec(name, n):
            make_policy(spec, n, arrow_config=arrow_config)
    base = workload.mean_rate
    if base <= 0:
        raise ValueError(f"workload {workload.name!r} has no positive mean rate")
    # Reference rate for the table: given, else Arrow's serving rate (filled in after the sweeps),
    # else the trace's own rate times the initial scale (which every sweep evaluates anyway).
    ref_after = reference_rate is None and "arrow" in names
    ref_rate = reference_rate if reference_rate is not None else base * settings.initial_scale
    ref_scale = ref_rate / base
    extra = tuple(sorted(set(settings.extra_scales) | ({ref_scale} if not ref_after else set())))
    run_settings = SweepSettings(**{**settings.__dict__, "extra_scales": extra})

    def run_sweeps(specs: list[str]) -> dict[str, SweepResult]:
        out: dict[str, SweepResult] = {}
        if backend == "ray":
            from arrow_rl.evaluation.ray_backend import run_jobs

            return run_jobs(_sweep_job, [(spec, (workload, emulator_config, spec, run_settings, arrow_config,
                                                 dynamo_config, oracle_config)) for spec in specs],
                            progress=progress, notify_arg=True, address=ray_address, shared=(0,))
        if jobs <= 1 or len(specs) == 1:
            for spec in specs:
                out[spec] = sweep_policy(workload, emulator_config, spec, run_settings, arrow_config,
                                         dynamo_config, oracle_config, on_point=progress)
            return out
        import multiprocessing as mp

        with mp.Manager() as manager:
            q = manager.Queue()
            notify = _Notifier(q) if progress is not None else None
            with _process_pool(jobs) as pool:
                futures: dict[Future, str] = {
                    pool.submit(_sweep_job, workload, emulator_config, spec, run_settings, arrow_config,
                                dynamo_config, oracle_config, notify): spec
                    for spec in specs
                }
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    _drain(q, progress)
                    for fut in done:
                        out[futures[fut]] = fut.result()
                _drain(q, progress)
        return out

    expanded = {name: expand_spec(name, n) for name in names}
    results = run_sweeps(list(dict.fromkeys(spec for specs in expanded.values() for spec in specs)))
    if "static-best" in names:
        expanded["static-best"] = _static_best_mixed(n, results, run_sweeps)

    rows: dict[str, ControllerResult] = {}
    for name in names:
        sweeps = [results[s] for s in expanded[name]]
        best = max(sweeps, key=lambda s: _static_rank(s, n))
        row = ControllerResult(name=name, serving_rate=best.serving_rate, serving_scale=best.serving_scale,
                               attainment=best.attainment_by_rate(), flips_per_min=best.flips_per_min,
                               sweeps=sweeps)
        if name in ("static-best", "static-best-pd"):
            row.best_split = split_of_spec(best.spec, n)
            row.splits = {split_of_spec(s.spec, n): s.serving_rate for s in sweeps}
        rows[name] = row

    if ref_after and rows["arrow"].serving_scale > 0:
        ref_scale = rows["arrow"].serving_scale
        ref_rate = ref_scale * base
        missing = [(name, row.best_split.spec if row.best_split is not None else name)
                   for name, row in rows.items() if row.attainment_at(ref_rate) is None]
        runs = _run_points(workload, emulator_config, [s for _, s in missing], ref_scale, run_settings,
                           arrow_config, dynamo_config, oracle_config, jobs, backend, ray_address)
        for (name, _), res in zip(missing, runs):
            rows[name].attainment[ref_rate] = res
            rows[name].attainment = dict(sorted(rows[name].attainment.items()))
    elif ref_after:
        ref_rate = base * settings.initial_scale

    timeline = None
    chosen = timeline_controller
    if chosen is None:
        chosen = "arrow" if "arrow" in rows else names[0]
    if chosen:
        if chosen not in rows:
            raise ValueError(f"timeline controller {chosen!r} is not among {names}")
        row = rows[chosen]
        spec = row.best_split.spec if row.best_split is not None else chosen
        scale = row.serving_scale if row.serving_scale > 0 else ref_scale
        timeline = run_spec_at_scale(workload, emulator_config, spec, scale, run_settings, arrow_config,
                                     dynamo_config, oracle_config, record_timeline=True)

    return EvaluationResult(
        workload=workload.name, base_rate=base, reference_rate=ref_rate, controllers=rows,
        settings={"num_instances": n, "num_requests": len(workload), "control_interval_s": settings.control_interval_s,
                  "seed": settings.seed, "target_attainment": settings.target, "rel_tol": settings.rel_tol,
                  "max_evals": settings.max_evals, "initial_scale": settings.initial_scale,
                  "arrow_config": (arrow_config or ArrowConfig()).model_dump(),
                  "dynamo_config": (dynamo_config or DynamoConfig()).model_dump(),
                  "oracle_config": (oracle_config or OracleConfig()).model_dump()},
        timeline=timeline, timeline_controller=chosen, timeline_scale=scale if chosen else None)


def _attainment_job(workload: Workload, emulator_config: Any, spec: str, scale: float, settings: SweepSettings,
                    arrow_config: ArrowConfig | None, dynamo_config: DynamoConfig | None,
                    oracle_config: OracleConfig | None) -> float:
    return run_spec_at_scale(workload, emulator_config, spec, scale, settings, arrow_config, dynamo_config,
                             oracle_config).attainment


def _run_points(workload: Workload, emulator_config: Any, specs: list[str], scale: float, settings: SweepSettings,
                arrow_config: ArrowConfig | None, dynamo_config: DynamoConfig | None,
                oracle_config: OracleConfig | None, jobs: int, backend: str = "local",
                ray_address: str | None = None) -> list[float]:
    """Attainment of several specs at one rate scale (parallel when ``jobs`` > 1, or on Ray)."""
    args = [(workload, emulator_config, s, scale, settings, arrow_config, dynamo_config, oracle_config) for s in specs]
    if backend == "ray":
        from arrow_rl.evaluation.ray_backend import run_jobs

        out = run_jobs(_attainment_job, list(enumerate(args)), address=ray_address, shared=(0,))
        return [out[i] for i in range(len(args))]
    if jobs <= 1 or len(specs) <= 1:
        return [_attainment_job(*a) for a in args]
    with _process_pool(jobs) as pool:
        return list(pool.map(_attainment_job, *zip(*args)))


def _drain(q: Any, progress: Callable | None) -> None:
    if progress is None:
        return
    while True:
        try:
            spec, scale, att = q.get_nowait()
        except queue_mod.Empty:
            return
        progress(spec, scale, att)
