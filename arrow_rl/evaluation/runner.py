"""The one control loop: advance one control interval, let the controller act, apply its flips.

``PDClusterEnv`` mirrors exactly this loop (its ``step`` = apply flips, then advance), so an env
driven by the Arrow interval controller reproduces ``run_policy``'s result for the same seed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from arrow_rl.cluster.base import SLO, Cluster, MetricsWindow, Mode, RequestRecord, Role
from arrow_rl.control import ControlState
from arrow_rl.controllers.registry import Policy, default_initial_prefill
from arrow_rl.workload.workload import Workload


@dataclass
class FlipRecord:
    time_s: float
    instance_id: int
    role: str
    source: str  # "controller" (applied by this loop) or the router's tag (Arrow "alg1")


@dataclass
class TimelinePoint:
    """One control interval as seen at its end."""

    t: float
    num_prefill: int
    arrivals: int
    ttft_mean: float
    ttft_p90: float
    tpot_mean: float
    itl_mean: float
    prefill_load: float
    decode_load: float
    finished: int
    finished_within_slo: int


@dataclass
class RunResult:
    policy: str
    num_requests: int
    records: list[RequestRecord]
    attainment: float            # both SLOs met / offered requests (unfinished = miss, §6.1)
    ttft_attainment: float
    tpot_attainment: float
    finished: int
    flips: list[FlipRecord]
    flips_per_min: float
    sim_end_s: float
    wall_s: float
    timeline: list[TimelinePoint] = field(default_factory=list)
    # ``stop_below`` ended the run once its attainment could no longer reach the target; then
    # ``attainment`` (and the TTFT/TPOT ones) are upper bounds, all below the target.
    stopped_early: bool = False

    def summary(self) -> dict:
        """Scalar summary (JSON-friendly)."""
        ttft = np.array([r.ttft_s for r in self.records if r.finished], dtype=float)
        tpot = np.array([r.tpot_s for r in self.records if r.finished and not math.isnan(r.tpot_s)], dtype=float)

        def pct(a: np.ndarray, q: float) -> float:
            return float(np.percentile(a, q)) if a.size else math.nan

        return {
            "policy": self.policy, "num_requests": self.num_requests, "finished": self.finished,
            "attainment": self.attainment, "ttft_attainment": self.ttft_attainment,
            "tpot_attainment": self.tpot_attainment, "flips": len(self.flips),
            "flips_per_min": self.flips_per_min, "ttft_mean": float(ttft.mean()) if ttft.size else math.nan,
            "ttft_p90": pct(ttft, 90), "tpot_mean": float(tpot.mean()) if tpot.size else math.nan,
            "tpot_p90": pct(tpot, 90), "sim_end_s": self.sim_end_s, "wall_s": self.wall_s,
        }


def configure(emulator_config: Any, **updates: Any) -> Any:
    """Copy an emulator config with ``updates``, re-validated (pydantic model or dataclass)."""
    if hasattr(emulator_config, "model_dump"):
        return type(emulator_config)(**{**emulator_config.model_dump(), **updates})
    if dataclasses.is_dataclass(emulator_config):
        return dataclasses.replace(emulator_config, **updates)
    raise TypeError(f"unsupported emulator config type {type(emulator_config).__name__}")


def slo_of(emulator_config: Any) -> SLO:
    slo = getattr(emulator_config, "slo", None)
    if isinstance(slo, SLO):
        return slo
    return SLO(float(emulator_config.slo_ttft_s), float(emulator_config.slo_tpot_s))


def last_useful_time(workload: Workload, slo: SLO) -> float:
    """After this time no unfinished request can still meet both SLOs (arrival + TTFT SLO +
    TPOT SLO × (output − 1)), so stopping there cannot change attainment."""
    if len(workload) == 0:
        return 0.0
    deadline = workload.arrival_s + slo.ttft_s + slo.tpot_s * np.maximum(workload.output_tokens - 1, 0)
    return float(deadline.max())


def attainment_of(records: list[RequestRecord], num_requests: int, slo: SLO,
                  count_from_s: float = 0.0) -> tuple[float, float, float, int]:
    """(both, TTFT-only, TPOT-only, finished) fractions over *offered* requests (§6.1).

    Requests arriving before ``count_from_s`` (a warm-up) are served but not counted; then
    ``num_requests`` must be the number of offered requests arriving at or after it.
    """
    if num_requests == 0:
        return 1.0, 1.0, 1.0, 0
    both = ttft_ok = tpot_ok = fin = 0
    for r in records:
        if not r.finished or r.arrival_s < count_from_s:
            continue
        fin += 1
        t_ok = r.ttft_s <= slo.ttft_s
        tpot = r.tpot_s
        p_ok = math.isnan(tpot) or tpot <= slo.tpot_s
        ttft_ok += t_ok
        tpot_ok += p_ok
        both += t_ok and p_ok
    return both / num_requests, ttft_ok / num_requests, tpot_ok / num_requests, fin


def meets_slo(record: RequestRecord, slo: SLO) -> bool:
    """Both SLOs met (§6.1): finished, TTFT within its SLO, and mean TPOT within its SLO (a
    one-token answer has no TPOT)."""
    if not record.finished or not record.ttft_s <= slo.ttft_s:
        return False
    tpot = record.tpot_s
    return math.isnan(tpot) or tpot <= slo.tpot_s


class CertainMisses:
    """Counts counted requests that can no longer meet both SLOs, as a run goes.

    A counted request is a certain miss once it ended without meeting them; once it is unended
    with no first token past arrival + TTFT SLO (its TTFT will exceed the SLO); or once it is
    unended past its deadline, arrival + TTFT SLO + TPOT SLO × (output − 1) (finishing later means
    a mean TPOT over the SLO: the argument of ``last_useful_time``). When certain misses exceed
    ``(1 − target)`` of the counted requests, the final attainment is below ``target`` whatever
    happens next, so a serving-rate search may stop the run there: an overloaded run, which costs
    10–20× a passing one when played to the end (its queues grow without bound), ends about one
    TTFT SLO after the overload starts. Each request is looked at a bounded number of times.
    """

    def __init__(self, workload: Workload, slo: SLO, count_from_s: float, target: float) -> None:
        n = len(workload)
        self.first = int(np.searchsorted(workload.arrival_s, count_from_s, side="left"))
        self.counted = n - self.first
        self.allowed = (1.0 - target) * self.counted
        arrival = np.asarray(workload.arrival_s, dtype=float)
        out = np.asarray(workload.output_tokens, dtype=float)
        deadline = arrival[self.first:] + slo.ttft_s + slo.tpot_s * np.maximum(out[self.first:] - 1.0, 0.0)
        order = np.argsort(deadline, kind="stable")
        self._by_deadline = (order + self.first).tolist()  # request ids, earliest deadline first
        self._deadlines = deadline[order].tolist()
        self._ttft_due = (arrival + slo.ttft_s).tolist()   # a first token after this misses
        self._ended = [False] * n
        self._doomed: set[int] = set()                      # unended when their miss became certain
        self._slo = slo
        self._seen = 0
        self._next_ttft = self.first
        self._next_deadline = 0
        self.ended_counted = 0
        self._ended_missed = 0

    def update(self, cluster: Cluster) -> int:
        """Certain misses as of ``cluster.now``."""
        for r in cluster.ended_since(self._seen):
            self._seen += 1
            rid = r.request_id
            self._ended[rid] = True
            if rid >= self.first:
                self.ended_counted += 1
                if rid not in self._doomed and not meets_slo(r, self._slo):
                    self._ended_missed += 1
        now = cluster.now
        due, n = self._ttft_due, len(self._ttft_due)
        while self._next_ttft < n and due[self._next_ttft] < now:
            rid = self._next_ttft
            if not self._ended[rid] and math.isnan(cluster.first_token_s(rid)):
                self._doomed.add(rid)
            self._next_ttft += 1
        dl, m = self._deadlines, len(self._deadlines)
        while self._next_deadline < m and dl[self._next_deadline] < now:
            rid = self._by_deadline[self._next_deadline]
            if not self._ended[rid]:
                self._doomed.add(rid)
            self._next_deadline += 1
        return self._ended_missed + len(self._doomed)

    def hopeless(self, cluster: Cluster) -> bool:
        return self.counted > 0 and self.update(cluster) > self.allowed


def build_cluster(workload: Workload, emulator_config: Any, policy: Policy, seed: int, preset: Any = None) -> Cluster:
    """A fresh emulated cluster for ``policy`` (``preset``: a preset object to use instead of the
    config's named one, e.g. a handicapped one in the suite's power check)."""
    from arrow_rl.cluster.emulator import EmulatedCluster

    n = int(emulator_config.num_instances)
    # the policy sets the whole split: a config's own num_mixed does not outlive it
    m = int(getattr(policy, "initial_mixed", 0) or 0)
    mixed = {"num_mixed": m} if m or getattr(emulator_config, "num_mixed", 0) else {}
    if policy.mode is Mode.COLOCATED:
        cfg = configure(emulator_config, mode=Mode.COLOCATED, **mixed)
    else:
        p = policy.initial_prefill if policy.initial_prefill is not None else default_initial_prefill(n)
        cfg = configure(emulator_config, mode=Mode.DISAGGREGATED, num_prefill=p, **mixed)
    return EmulatedCluster(workload, cfg, router=policy.router, seed=seed, preset=preset)


def run_policy(
    workload: Workload,
    emulator_config: Any,
    policy: Policy,
    control_interval_s: float = 1.0,
    seed: int = 0,
    record_timeline: bool = False,
    progress: Callable[[float, float], None] | None = None,
    count_from_s: float = 0.0,
    stop_below: float | None = None,
    preset: Any = None,
) -> RunResult:
    """Run ``policy`` over ``workload`` on a fresh emulated cluster and score it
    (``run_on_cluster`` is the same loop on a cluster you built, emulated or live)."""
    if control_interval_s <= 0:
        raise ValueError(f"control_interval_s must be > 0, got {control_interval_s}")
    cluster = build_cluster(workload, emulator_config, policy, seed, preset)
    return run_on_cluster(cluster, workload, slo_of(emulator_config), policy, control_interval_s,
                          record_timeline=record_timeline, progress=progress, count_from_s=count_from_s,
                          stop_below=stop_below)


def run_on_cluster(
    cluster: Cluster,
    workload: Workload,
    slo: SLO,
    policy: Policy,
    control_interval_s: float = 1.0,
    *,
    record_timeline: bool = False,
    progress: Callable[[float, float], None] | None = None,
    count_from_s: float = 0.0,
    stop_below: float | None = None,
) -> RunResult:
    """The control loop on any ``Cluster`` serving ``workload``, scored against ``slo``.

    The loop stops when the cluster is done or at ``last_useful_time`` (requests still unfinished
    then count as misses either way). Requests arriving before ``count_from_s`` are a warm-up:
    served (they load the cluster and the controller reacts to them) but left out of the
    attainment, so the initial split does not decide the result (``arrow_rl.evaluation.protocol``).
    With ``stop_below`` (a target attainment), the run also stops at the first control interval
    where the attainment can no longer reach it (``CertainMisses``): pass/fail against that target
    is unchanged, and the result says ``stopped_early`` with upper-bound attainments.
    """
    if control_interval_s <= 0:
        raise ValueError(f"control_interval_s must be > 0, got {control_interval_s}")
    t0 = time.perf_counter()
    controller = policy.controller
    if controller is not None:
        controller.reset(cluster.info)
        if policy.needs_cluster:
            controller.bind_cluster(cluster)  # type: ignore[attr-defined]
    horizon = last_useful_time(workload, slo)
    misses = CertainMisses(workload, slo, count_from_s, stop_below) if stop_below is not None else None
    stopped = False
    flips: list[FlipRecord] = []
    timeline: list[TimelinePoint] = []
    while not cluster.done and cluster.now < horizon - 1e-9:
        window = cluster.advance(min(control_interval_s, horizon - cluster.now))
        if record_timeline:
            timeline.append(_timeline_point(cluster, window))
        if controller is not None and not cluster.done:
            _control_step(cluster, controller, window, flips)
        if progress is not None:
            progress(cluster.now, horizon)
        if misses is not None and misses.hopeless(cluster):
            stopped = True
            break
    return _score(cluster, workload, slo, policy, count_from_s, misses if stopped else None,
                  _all_flips(cluster, flips), timeline, t0)


def _timeline_point(cluster: Cluster, window: MetricsWindow) -> TimelinePoint:
    roles = cluster.roles()
    return TimelinePoint(
        t=cluster.now, num_prefill=sum(1 for r in roles if r is Role.PREFILL), arrivals=window.arrivals,
        ttft_mean=window.prefill.ttft_mean, ttft_p90=window.prefill.ttft_p90,
        tpot_mean=window.decode.tpot_mean, itl_mean=window.decode.itl_mean,
        prefill_load=window.prefill.load, decode_load=window.decode.load,
        finished=window.finished, finished_within_slo=window.finished_within_slo)


def _control_step(cluster: Cluster, controller: Any, window: MetricsWindow, flips: list[FlipRecord]) -> None:
    """One control interval: the controller reads the window and the instances, its flips apply now."""
    state = ControlState(now=cluster.now, window=window, instances=tuple(cluster.instances()))
    for f in controller.act(state):
        cluster.flip(f.instance_id, f.role)
        flips.append(FlipRecord(cluster.now, f.instance_id, Role(f.role).value, "controller"))


def _score(cluster: Cluster, workload: Workload, slo: SLO, policy: Policy, count_from_s: float,
           stopped_by: "CertainMisses | None", flips: list[FlipRecord], timeline: list[TimelinePoint],
           t0: float) -> RunResult:
    """Attainment over the counted requests; after an early stop (``stopped_by``), upper bounds."""
    records = list(cluster.completed())
    counted = len(workload) - int(np.searchsorted(workload.arrival_s, count_from_s, side="left"))
    both, t_ok, p_ok, fin = attainment_of(records, counted, slo, count_from_s)
    if stopped_by is not None and counted:
        # unended requests may still meet their SLOs: the best case is every one not already a miss
        unended = (counted - stopped_by.ended_counted) / counted
        both = 1.0 - stopped_by.update(cluster) / counted
        t_ok, p_ok = min(1.0, t_ok + unended), min(1.0, p_ok + unended)
    minutes = max(cluster.now, 1e-9) / 60.0
    return RunResult(policy=policy.name, num_requests=counted, records=records, attainment=both,
                     ttft_attainment=t_ok, tpot_attainment=p_ok, finished=fin, flips=flips,
                     flips_per_min=len(flips) / minutes, sim_end_s=cluster.now,
                     wall_s=time.perf_counter() - t0, timeline=timeline, stopped_early=stopped_by is not None)


def _all_flips(cluster: Cluster, controller_flips: list[FlipRecord]) -> list[FlipRecord]:
    """Every effective relabel of the run: the cluster's flip history (a no-op relabel is not a
    flip), tagging the ones this loop applied as "controller" and the rest (Arrow Algorithm 1
    step 4, inside the router) as "alg1"."""
    applied = {(round(f.time_s, 9), f.instance_id, f.role) for f in controller_flips}
    out = []
    for t, i, role in cluster.flip_history():
        role_v = Role(role).value
        src = "controller" if (round(t, 9), i, role_v) in applied else "alg1"
        out.append(FlipRecord(float(t), int(i), role_v, src))
    return out
