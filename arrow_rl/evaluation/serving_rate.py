"""Serving-rate sweep of one policy: rate-scale search (Arrow §6.1) over ``run_policy``.

Everything here is a plain top-level function of picklable arguments so that the evaluator can
run one sweep per worker process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from arrow_rl.arrow.config import ArrowConfig
from arrow_rl.controllers.baselines import DynamoConfig, OracleConfig
from arrow_rl.controllers.registry import make_policy
from arrow_rl.evaluation.runner import RunResult, run_policy
from arrow_rl.metrics.serving_rate import TARGET_ATTAINMENT, find_serving_rate
from arrow_rl.workload.workload import Workload


@dataclass
class SweepSettings:
    """How a sweep searches (shared by every policy of one evaluation)."""

    control_interval_s: float = 1.0
    seed: int = 0
    target: float = TARGET_ATTAINMENT
    initial_scale: float = 1.0
    rel_tol: float = 0.05
    max_evals: int = 12
    extra_scales: tuple[float, ...] = ()  # also evaluated (attainment curve / reference rate)
    rate_mode: str = "scale"       # "scale" (Arrow §6.1) or "superpose" (arrow_rl.evaluation.protocol)
    warmup_s: float = 0.0          # served, not counted (0: the paper's protocol)
    span_s: float = 600.0          # counted span in superpose mode


@dataclass
class PointResult:
    scale: float
    rate: float
    attainment: float
    ttft_attainment: float
    tpot_attainment: float
    flips_per_min: float
    wall_s: float


@dataclass
class SweepResult:
    spec: str
    name: str
    base_rate: float
    serving_scale: float
    serving_rate: float
    points: list[PointResult] = field(default_factory=list)
    wall_s: float = 0.0

    def point_at(self, scale: float) -> PointResult | None:
        for p in self.points:
            if abs(p.scale - scale) <= 1e-12 * max(1.0, scale):
                return p
        return None

    @property
    def flips_per_min(self) -> float:
        p = self.point_at(self.serving_scale)
        return p.flips_per_min if p is not None else 0.0

    def attainment_by_rate(self) -> dict[float, float]:
        return {p.rate: p.attainment for p in sorted(self.points, key=lambda p: p.scale)}


def run_spec_at_scale(workload: Workload, emulator_config: Any, spec: str, scale: float, settings: SweepSettings,
                      arrow_config: ArrowConfig | None = None, dynamo_config: DynamoConfig | None = None,
                      oracle_config: OracleConfig | None = None, record_timeline: bool = False) -> RunResult:
    policy = make_policy(spec, int(emulator_config.num_instances), arrow_config=arrow_config,
                         dynamo_config=dynamo_config, oracle_config=oracle_config)
    if settings.rate_mode == "scale" and settings.warmup_s == 0:  # the paper's protocol, unchanged
        wl, count_from = workload.scaled(scale), 0.0
    else:
        from arrow_rl.evaluation.protocol import LoadSource, Protocol, build_load

        protocol = Protocol(rate_mode=settings.rate_mode, warmup_s=settings.warmup_s,  # type: ignore[arg-type]
                            span_s=settings.span_s, seeds=(settings.seed,))
        load = build_load(LoadSource(workload.name, trace=workload), scale, settings.seed, protocol)
        wl, count_from = load.workload, load.count_from_s
    return run_policy(wl, emulator_config, policy, control_interval_s=settings.control_interval_s,
                      seed=settings.seed, record_timeline=record_timeline, count_from_s=count_from)


def sweep_policy(workload: Workload, emulator_config: Any, spec: str, settings: SweepSettings,
                 arrow_config: ArrowConfig | None = None, dynamo_config: DynamoConfig | None = None,
                 oracle_config: OracleConfig | None = None,
                 on_point: Callable[[str, float, float], None] | None = None) -> SweepResult:
    """Find ``spec``'s serving rate on ``workload`` and keep every evaluated point.
    ``on_point(spec, scale, attainment)`` is called after each simulation (progress bars)."""
    import time

    t0 = time.perf_counter()
    base = workload.mean_rate
    if base <= 0:
        raise ValueError(f"workload {workload.name!r} has no positive mean rate (needs ≥ 2 requests over a time span)")
    points: dict[float, PointResult] = {}
    name = spec

    def at(scale: float) -> float:
        nonlocal name
        r = run_spec_at_scale(workload, emulator_config, spec, scale, settings, arrow_config, dynamo_config, oracle_config)
        name = r.policy
        points[scale] = PointResult(scale, scale * base, r.attainment, r.ttft_attainment, r.tpot_attainment,
                                    r.flips_per_min, r.wall_s)
        if on_point is not None:
            on_point(spec, scale, r.attainment)
        return r.attainment

    res = find_serving_rate(at, base, target=settings.target, initial_scale=settings.initial_scale,
                            rel_tol=settings.rel_tol, max_evals=settings.max_evals)
    for s in settings.extra_scales:
        if s not in points:
            at(s)
    return SweepResult(spec=spec, name=name, base_rate=base, serving_scale=res.scale, serving_rate=res.rate,
                       points=sorted(points.values(), key=lambda p: p.scale), wall_s=time.perf_counter() - t0)
