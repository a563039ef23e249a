"""The live control loop: every interval, read a window from the cluster, ask the controller,
apply its flips. A controller that raises or overruns its time budget changes nothing that
interval (the split stays as it was); a flip the router rejects is logged and skipped.
"""

from __future__ import annotations

import collections
import concurrent.futures
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from arrow_rl.cluster.base import Cluster, Flip, MetricsWindow, Role
from arrow_rl.control import ControlState, Controller


MAX_DECISIONS = 10_000


class ClusterUnreachable(RuntimeError):
    """The control loop could not read the cluster ``max_failures`` times in a row."""


@dataclass
class DeployStats:
    steps: int = 0
    flips_applied: int = 0
    flips_rejected: int = 0
    controller_errors: int = 0
    controller_timeouts: int = 0
    # The newest decisions (the loop runs until Ctrl-C; ``deploy --log`` writes every one).
    decisions: collections.deque[dict] = field(default_factory=lambda: collections.deque(maxlen=MAX_DECISIONS))


def observation_summary(w: MetricsWindow, roles: list[str]) -> dict[str, Any]:
    """The part of the observation worth a log line (the full window is in the cluster's records)."""
    def r(x: float) -> float | None:
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)
    return {
        "window": [r(w.start_s), r(w.end_s)], "roles": roles, "arrivals": w.arrivals, "finished": w.finished,
        "within_slo": w.finished_within_slo, "rejected": w.rejected,
        "LP": r(w.prefill.load), "LD": r(w.decode.load),
        "ttft_mean": r(w.prefill.ttft_mean), "tpot_mean": r(w.decode.tpot_mean), "itl_mean": r(w.decode.itl_mean),
        "pending_ttft_misses": w.pending_predicted_ttft_misses,
    }


def flips_to_split(roles: list[Role], num_prefill: int) -> list[Flip]:
    """Fewest flips that leave exactly ``num_prefill`` prefill instances (lowest ids move first)."""
    prefill = [i for i, r in enumerate(roles) if r is Role.PREFILL]
    decode = [i for i, r in enumerate(roles) if r is Role.DECODE]
    if len(prefill) > num_prefill:
        return [Flip(i, Role.DECODE) for i in sorted(prefill, reverse=True)[: len(prefill) - num_prefill]]
    return [Flip(i, Role.PREFILL) for i in decode[: num_prefill - len(prefill)]]


def flips_to_roles(roles: list[Role], num_prefill: int, num_mixed: int) -> list[Flip]:
    """Fewest flips that leave ``num_prefill`` prefill, ``num_mixed`` MIXED and the rest decode
    instances (``static:P:D:M``). A role with too many gives up instances (MIXED its lowest ids,
    PREFILL and DECODE their highest); the lowest of those fill PREFILL, then DECODE, the highest
    MIXED, so MIXED instances end up last where they can, as in the emulator. One batch: the
    router validates the end state, not the steps."""
    target = {Role.PREFILL: num_prefill, Role.MIXED: num_mixed, Role.DECODE: len(roles) - num_prefill - num_mixed}
    if min(target.values()) < 0:
        raise ValueError(f"cannot split {len(roles)} instances into {num_prefill} prefill and {num_mixed} mixed")
    spare: list[int] = []
    for role in Role:
        ids = [i for i, r in enumerate(roles) if r is role]
        spare += sorted(ids, reverse=role is not Role.MIXED)[: max(0, len(ids) - target[role])]
    spare.sort()
    flips: list[Flip] = []
    for role in (Role.PREFILL, Role.DECODE, Role.MIXED):
        short = target[role] - sum(1 for r in roles if r is role)
        for _ in range(max(0, short)):
            flips.append(Flip(spare.pop(0), role))
    return flips


def _sync_arrow_clock(controller: Any, cluster: Any, seen: int) -> int:
    """Arrow §5.5: one P→D cooldown clock for router (Alg. 1) and monitor (Alg. 2). When they run
    in different processes, the monitor learns the router's P→D flips from the flip events."""
    state = getattr(controller, "state", None)
    events = getattr(cluster, "flip_events", None)
    if state is None or not hasattr(state, "last_p2d_flip_s") or events is None:
        return seen
    total = getattr(cluster, "flip_events_total", len(events))  # events may keep only the newest
    new = min(total - seen, len(events))
    for e in list(events)[len(events) - new:] if new > 0 else ():
        if e.get("new") == Role.DECODE.value and e.get("source") != getattr(controller, "name", None):
            state.last_p2d_flip_s = max(state.last_p2d_flip_s, float(e["t"]))
    return total


def run_control_loop(cluster: Cluster, controller: Controller, interval_s: float, *,
                     log: Callable[[dict], None] = lambda d: None, steps: int | None = None,
                     act_timeout_s: float | None = None, should_stop: Callable[[], bool] = lambda: False,
                     push_signals: bool = True, max_failures: int = 5) -> DeployStats:
    """Run until ``steps`` intervals have passed or ``should_stop()``; Ctrl-C propagates."""
    stats = DeployStats()
    controller.reset(cluster.info)
    state = getattr(controller, "state", None)
    if getattr(state, "flip_log_limit", 0) is None:  # Arrow's flip log: the newest only, as above
        state.flip_log_limit = MAX_DECISIONS
    timeout = act_timeout_s if act_timeout_s is not None else interval_s
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="controller")
    pending: concurrent.futures.Future | None = None
    seen_flips = 0
    try:
        failures = 0
        while (steps is None or stats.steps < steps) and not should_stop():
            try:
                window = cluster.advance(interval_s)
                views = list(cluster.instances())
                failures = 0
            except Exception as exc:  # noqa: BLE001 - router restarting or unreachable: wait and retry
                failures += 1
                log({"step": stats.steps, "t": round(cluster.now, 3), "obs": None, "flips": [], "applied": [],
                     "error": f"cannot read the cluster ({type(exc).__name__}: {exc}); retry {failures}/{max_failures}"})
                if failures >= max_failures:
                    raise ClusterUnreachable(f"gave up after {failures} failed reads: {exc}") from exc
                time.sleep(interval_s)
                continue
            stats.steps += 1
            seen_flips = _sync_arrow_clock(controller, cluster, seen_flips)
            entry: dict[str, Any] = {"step": stats.steps, "t": round(cluster.now, 3),
                                     "obs": observation_summary(window, [v.role.value for v in views]),
                                     "flips": [], "applied": [], "error": None}
            late = [round(x, 3) for x in getattr(cluster, "scrape_lateness_s", [])]
            if any(late):   # an instance's /metrics was not in time: this window used older data for it
                entry["scrape_lateness_s"] = late
            if push_signals and hasattr(cluster, "admin"):
                try:  # Alg. 1's overload rule reads the monitor's LD (§5.5)
                    cluster.admin.signals(window.prefill.load, window.decode.load)
                except Exception:  # noqa: BLE001 - advisory only
                    pass
            flips: list[Flip] = []
            if pending is not None and not pending.done():
                entry["error"] = "controller still running from an earlier interval; no action"
                stats.controller_timeouts += 1
            else:
                state = ControlState(now=cluster.now, window=window, instances=views)
                pending = pool.submit(controller.act, state)
                try:
                    flips = list(pending.result(timeout=timeout) or [])
                except concurrent.futures.TimeoutError:
                    entry["error"] = f"controller timed out after {timeout:g}s; split unchanged"
                    stats.controller_timeouts += 1
                except Exception as exc:  # noqa: BLE001 - a crashing controller must not take the loop down
                    entry["error"] = f"controller raised {type(exc).__name__}: {exc}; split unchanged"
                    stats.controller_errors += 1
                    pending = None
            entry["flips"] = [{"id": f.instance_id, "role": Role(f.role).value} for f in flips]
            if flips:
                try:
                    res = cluster.flip_many(flips, source=getattr(controller, "name", "controller")) \
                        if hasattr(cluster, "flip_many") else [cluster.flip(f.instance_id, f.role) for f in flips]
                    applied = res.get("applied", []) if isinstance(res, dict) else entry["flips"]
                    entry["applied"] = applied
                    stats.flips_applied += len(applied)
                except Exception as exc:  # noqa: BLE001 - the router's reason goes to the log
                    entry["error"] = f"flips rejected: {exc}"
                    stats.flips_rejected += len(flips)
                sync = getattr(controller, "sync_applied", None)
                if sync is not None:  # Arrow's cooldown follows the flips the router applied
                    sync(state.now, flips, [Flip(int(d["id"]), Role(d.get("new", d.get("role"))))
                                            for d in entry["applied"]])
            stats.decisions.append(entry)
            log(entry)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return stats
