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
    asker = _ControllerCall(controller, act_timeout_s if act_timeout_s is not None else interval_s)
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
                _log_unreadable(cluster, stats, log, exc, failures, max_failures)
                time.sleep(interval_s)
                continue
            stats.steps += 1
            seen_flips = _sync_arrow_clock(controller, cluster, seen_flips)
            entry = _step_entry(cluster, stats, window, views)
            if push_signals:
                _push_signals(cluster, window)
            now = cluster.now
            flips = asker.act(ControlState(now=now, window=window, instances=views), entry, stats)
            entry["flips"] = [{"id": f.instance_id, "role": Role(f.role).value} for f in flips]
            if flips:
                _apply_flips(cluster, controller, flips, now, entry, stats)
            stats.decisions.append(entry)
            log(entry)
    finally:
        asker.close()
    return stats


def _log_unreadable(cluster: Cluster, stats: DeployStats, log: Callable[[dict], None], exc: Exception,
                    failures: int, max_failures: int) -> None:
    """Log a failed read of the cluster; give up (``ClusterUnreachable``) after ``max_failures`` in a row."""
    log({"step": stats.steps, "t": round(cluster.now, 3), "obs": None, "flips": [], "applied": [],
         "error": f"cannot read the cluster ({type(exc).__name__}: {exc}); retry {failures}/{max_failures}"})
    if failures >= max_failures:
        raise ClusterUnreachable(f"gave up after {failures} failed reads: {exc}") from exc


def _step_entry(cluster: Cluster, stats: DeployStats, window: MetricsWindow, views: list) -> dict[str, Any]:
    """The decision log line of one interval, before the controller is asked."""
    entry: dict[str, Any] = {"step": stats.steps, "t": round(cluster.now, 3),
                             "obs": observation_summary(window, [v.role.value for v in views]),
                             "flips": [], "applied": [], "error": None}
    late = [round(x, 3) for x in getattr(cluster, "scrape_lateness_s", [])]
    if any(late):   # an instance's /metrics was not in time: this window used older data for it
        entry["scrape_lateness_s"] = late
    return entry


def _push_signals(cluster: Cluster, window: MetricsWindow) -> None:
    """Alg. 1's overload rule reads the monitor's LD (§5.5): hand the window's LP/LD to the router."""
    if not hasattr(cluster, "admin"):
        return
    try:
        cluster.admin.signals(window.prefill.load, window.decode.load)
    except Exception:  # noqa: BLE001 - advisory only
        pass


class _ControllerCall:
    """Calls ``controller.act`` in a worker thread with a time budget. A call that overruns keeps
    running; until it returns, later intervals take no action (their entries say so)."""

    def __init__(self, controller: Controller, timeout_s: float) -> None:
        self.controller = controller
        self.timeout_s = timeout_s
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="controller")
        self.pending: concurrent.futures.Future | None = None

    def act(self, state: ControlState, entry: dict[str, Any], stats: DeployStats) -> list[Flip]:
        if self.pending is not None and not self.pending.done():
            entry["error"] = "controller still running from an earlier interval; no action"
            stats.controller_timeouts += 1
            return []
        self.pending = self.pool.submit(self.controller.act, state)
        try:
            return list(self.pending.result(timeout=self.timeout_s) or [])
        except concurrent.futures.TimeoutError:
            entry["error"] = f"controller timed out after {self.timeout_s:g}s; split unchanged"
            stats.controller_timeouts += 1
        except Exception as exc:  # noqa: BLE001 - a crashing controller must not take the loop down
            entry["error"] = f"controller raised {type(exc).__name__}: {exc}; split unchanged"
            stats.controller_errors += 1
            self.pending = None
        return []

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _apply_flips(cluster: Cluster, controller: Controller, flips: list[Flip], now: float, entry: dict[str, Any],
                 stats: DeployStats) -> None:
    """Send the controller's flips in one batch; the router's reason for a rejection goes to the log."""
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
        sync(now, flips, [Flip(int(d["id"]), Role(d.get("new", d.get("role")))) for d in entry["applied"]])
