"""A forecast of the next requests built only from what a controller has observed: the recent past.

The what-if planner (``arrow_rl.controllers.whatif``) takes the requests a branch sees arrive as a
parameter. ``RECORDED_FUTURE`` hands it the trace itself (clairvoyant). ``RecentPast`` follows a
cluster as a deployed controller could and builds ``ForecastArrivals``: branches whose future is a
replay of the last ``history_s`` seconds.

The rule on what may be read (the forecast never reads the trace's future):

* arrivals: the arrival time and prompt length of every request that has reached the engine by now
  (``cluster.arrived_since``; a router sees both when it places the prompt);
* output lengths: only those of requests that have *finished* (``cluster.ended_since``), since a
  serving system learns an answer's length when it ends. A request still running, or arrived
  recently, contributes its prompt length and arrival time but not its output length.

The replay mirrors the past about now: a request that arrived ``u`` seconds ago is forecast to
arrive ``u`` seconds from now, with its prompt length. Mirroring keeps the most recent arrivals
nearest to now (the near future is most like the recent past), the gaps between arrivals (so bursts
stay bursts) and the prompt mix; a horizon longer than the observed past is filled by reflecting
the past back and forth (ping-pong), which keeps arrivals continuous at every seam. Each forecast
request's output length is drawn, cyclically and most recent first, from the output lengths of the
requests that finished in the last ``history_s`` seconds (at least ``min_finished`` of the latest
finishes, however old); before anything has finished, ``prior_output_tokens``. Deterministic: the
same observations give the same forecast.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from arrow_rl.workload.workload import Workload


class ForecastArrivals:
    """An ``ArrivalStream`` whose branches replace the trace's future by ``future`` (absolute times,
    none before now): the branch keeps the present state, queues and work in flight included."""

    name = "forecast"

    def __init__(self, future: Workload) -> None:
        self.future = future

    def branch(self, cluster: Any) -> Any:
        return cluster.clone_with_future(self.future)

    @staticmethod
    def require(cluster: Any, who: str) -> None:
        """Fail when binding: ``who`` needs the emulator's ``clone_with_future`` and ``arrived_since``
        (a live cluster cannot be branched)."""
        if not (hasattr(cluster, "clone_with_future") and hasattr(cluster, "arrived_since")):
            raise TypeError(f"{who} needs a cluster with clone_with_future() and arrived_since() (the emulator)")


class RecentPast:
    """What a controller has observed of one cluster over the last ``history_s`` seconds, followed
    incrementally (module docstring: what it may read), and the forecast made from it."""

    def __init__(self, history_s: float, min_finished: int = 32, prior_output_tokens: int = 256) -> None:
        if not history_s > 0:
            raise ValueError(f"history_s must be > 0, got {history_s}")
        self.history_s = float(history_s)
        self.min_finished = int(min_finished)
        self.prior_output_tokens = int(prior_output_tokens)
        self.clear()

    def clear(self) -> None:
        """Forget everything (a new run, or another cluster)."""
        self._arrived = 0                                        # arrivals read so far
        self._ended = 0                                          # ended records read so far
        self._arrivals: deque[tuple[float, int]] = deque()       # (arrival_s, input_tokens), oldest first
        self._finished: deque[tuple[float, int]] = deque()       # (finish_s, output_tokens), oldest first

    def observe(self, cluster: Any) -> None:
        """Read what reached the engine and what finished since the last call; forget what is older
        than ``history_s`` (finishes: keep at least ``min_finished``)."""
        times, prompts = cluster.arrived_since(self._arrived)
        self._arrived += len(times)
        self._arrivals.extend(zip(times, prompts))
        ended = cluster.ended_since(self._ended)
        self._ended += len(ended)
        self._finished.extend((r.finish_s, r.output_tokens) for r in ended if not r.rejected)
        since = cluster.now - self.history_s
        while self._arrivals and self._arrivals[0][0] < since:
            self._arrivals.popleft()
        while len(self._finished) > self.min_finished and self._finished[0][0] < since:
            self._finished.popleft()

    def output_pool(self) -> list[int]:
        """Output lengths a forecast request may take, most recent finish first."""
        if not self._finished:
            return [self.prior_output_tokens]
        return [out for _, out in reversed(self._finished)]

    def forecast(self, now: float, horizon_s: float) -> Workload:
        """The requests forecast to arrive in (now, now + ``horizon_s``) (module docstring)."""
        span = min(self.history_s, now)          # the past observed so far, at most history_s
        if not self._arrivals or not span > 0 or not horizon_s > 0:
            return _empty()
        ago = now - np.fromiter((a for a, _ in self._arrivals), dtype=np.float64, count=len(self._arrivals))
        prompts = np.fromiter((p for _, p in self._arrivals), dtype=np.int64, count=len(self._arrivals))
        times, rows = [], []
        tile = 0
        while tile * span < horizon_s:          # tile k mirrors the past (k even) or replays it (k odd)
            t = now + tile * span + ago if tile % 2 == 0 else now + (tile + 1) * span - ago
            keep = (t > now) & (t < now + horizon_s)
            times.append(t[keep])
            rows.append(np.flatnonzero(keep))
            tile += 1
        t_all, r_all = np.concatenate(times), np.concatenate(rows)
        order = np.lexsort((r_all, t_all))      # by time, then by observed row: deterministic
        pool = np.asarray(self.output_pool(), dtype=np.int64)
        outputs = pool[np.arange(order.size) % pool.size]
        return Workload(t_all[order], prompts[r_all[order]], outputs, name="recent-past forecast")


def _empty() -> Workload:
    return Workload(np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), name="recent-past forecast")
