"""``LiveCluster``: the ``Cluster`` interface over a running router (admin API) plus scraping.

``advance(dt)`` waits ``dt`` seconds of wall time, then reads what happened from the router's event
log (arrivals, first tokens, finished requests, flips) and from every instance's ``/metrics``, and
builds the same ``MetricsWindow`` the emulator produces. So ``PDClusterEnv`` and every controller
run on a live cluster unchanged.

Live definitions (where the emulator can see more than a router can):
- TTFT/TPOT come from the router's per-request measurements (client-visible: the
  instances' histograms mix both roles on a ``kv_both`` instance). The prefill pool's TTFT is over
  requests whose first token came out in the window; the decode pool's TPOT over requests that
  finished in it.
- Instance decode load (Arrow §5.5) = mean inter-chunk gap the router saw from that instance in the
  window / SLO_TPOT; prefill load = Σ T(rp, i) of its resident prefill legs / SLO_TTFT.
- Pool load = mean over the pool's instances (§5.5). A pool with no members (allowed at start,
  e.g. 2P0D) takes the mean over the instances that did that phase's work in the window.
- waiting/running/KV usage are the scraped vLLM gauges at window end.
- MIXED instances form ``MetricsWindow.mixed``: TTFT of requests whose prompt they
  computed, TPOT of requests that finished on them, load = mean of max(prefill, decode load) over
  them (as the emulator). Those requests then leave the P/D pools' statistics, and MIXED instances
  leave the P/D loads' fallback basis. Without a MIXED instance the window is as before.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
import re
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import httpx
import numpy as np

from arrow_rl.cluster.base import (
    SLO, Cluster, ClusterInfo, Flip, InstanceView, InstanceWindowStats, MetricsWindow, Mode, PoolStats,
    RequestRecord, Role,
)
from arrow_rl.cluster.live.bench import BenchOptions, replay
from arrow_rl.cluster.live.scraper import InstanceMetrics, Scraper
from arrow_rl.cluster.live.splits import flips_to_roles
from arrow_rl.perf.profile import InstanceProfile


class RouterAPIError(RuntimeError):
    """The router refused an admin call; ``status`` and the router's reason are kept."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"router answered HTTP {status}: {message}")
        self.status = status
        self.reason = message


# How long the control loop waits for the router's admin API. A router that shares its cores with
# vLLM engines can stall for seconds (seen: 5 s reads timing out under load 20 on 2 cores, and
# `deploy` then spent its steps in retries); a read that waits beats a retry that sleeps an interval.
ADMIN_TIMEOUT_S = 15.0


class AdminClient:
    """Thin client of the router's admin API (bearer token)."""

    def __init__(self, url: str, token: str, timeout_s: float = ADMIN_TIMEOUT_S, client: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout_s)
        self._headers = {"Authorization": f"Bearer {token}"}

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = self._client.request(method, self.url + path, headers=self._headers, **kw)
        if r.status_code >= 400:
            try:
                msg = r.json()["error"]["message"]
            except Exception:  # noqa: BLE001
                msg = r.text
            raise RouterAPIError(r.status_code, msg)
        return r.json()

    def state(self) -> dict:
        return self._call("GET", "/state")

    def events(self, after: int) -> dict:
        return self._call("GET", "/events", params={"after": after})

    def flip(self, flips: Sequence[Flip], source: str = "controller") -> dict:
        return self._call("POST", "/roles", json={"flips": [{"id": f.instance_id, "role": Role(f.role).value}
                                                            for f in flips], "source": source})

    def set_routing(self, policy: str) -> dict:
        return self._call("POST", "/routing", json={"policy": policy})

    def signals(self, prefill_load: float, decode_load: float) -> dict:
        return self._call("POST", "/signals", json={"prefill_load": prefill_load, "decode_load": decode_load})

    def close(self) -> None:
        self._client.close()


def _view(d: dict) -> InstanceView:
    return InstanceView(
        instance_id=int(d["instance_id"]), role=Role(d["role"]), num_prefill=int(d["num_prefill"]),
        prefill_tokens=int(d["prefill_tokens"]), prefill_tokens_sq=float(d["prefill_tokens_sq"]),
        num_decode=int(d["num_decode"]), decode_tokens=int(d["decode_tokens"]),
        kv_used_tokens=int(d["kv_used_tokens"]), kv_capacity_tokens=int(d["kv_capacity_tokens"]),
        healthy=bool(d["healthy"]),
    )


def _nan(x: Any) -> float:
    return math.nan if x is None else float(x)


@dataclass
class _Counters:
    itl_sum_s: float
    itl_count: int
    decode_tokens_out: int
    prefill_tokens_done: int
    busy_s: float


def _mean(xs: Sequence[float]) -> float:
    return float(np.mean(xs)) if len(xs) else 0.0


def _p90(xs: Sequence[float]) -> float:
    return float(np.percentile(xs, 90)) if len(xs) else 0.0


# ``deploy`` runs until Ctrl-C, so the client keeps only the newest records and flip events, as the
# router does (its RouterConfig.max_records / max_flips defaults).
def label_safe(source: str) -> str:
    """``source`` as the router accepts it (``arrow_rl.serving.admin.SOURCE_RE``): characters outside
    ``[A-Za-z0-9_.:@/+-]`` become ``_``, at most 64 of them (``controller`` if nothing is left)."""
    out = re.sub(r"[^A-Za-z0-9_.:@/+-]", "_", source)[:64]
    return out or "controller"


MAX_RECORDS = 100_000
# A window waits at most this long for the instances' /metrics; a slower scrape serves a later window
# (Scraper.window): the control loop decides on the last complete data and never blocks on a sick instance.
SCRAPE_WAIT_S = 0.25
MAX_FLIP_EVENTS = 10_000


class LiveCluster(Cluster):
    """A running router + its instances, seen through the backend-neutral ``Cluster`` API."""

    def __init__(self, router_url: str, token: str, *, scrape: bool = True, timeout_s: float = ADMIN_TIMEOUT_S,
                 preset: str = "live", admin: AdminClient | None = None, max_records: int = MAX_RECORDS,
                 max_flip_events: int = MAX_FLIP_EVENTS, scrape_wait_s: float = SCRAPE_WAIT_S) -> None:
        self.scrape_wait_s = scrape_wait_s
        self.admin = admin or AdminClient(router_url, token, timeout_s)
        sent = time.time()
        st = self.admin.state()
        self._t0_mono = time.monotonic()
        self._epoch0 = time.time()
        # router clock − ours (same host: ≈ 0): the router read its clock while the call was in
        # flight, so compare it with the call's midpoint, not its end (off by half the round trip)
        self._router_offset = st["now"] - (sent + self._epoch0) / 2
        self._slo = SLO(st["slo"]["ttft_s"], st["slo"]["tpot_s"])
        views = [_view(d) for d in st["instances"]]
        profiles = {int(d["instance_id"]): InstanceProfile(**d["profile"]) for d in st["instances"] if d.get("profile")}
        self._info = ClusterInfo(num_instances=len(views), preset=preset, slo=self._slo, mode=Mode.DISAGGREGATED,
                                 initial_roles=tuple(v.role for v in views),
                                 extra={"profiles": profiles or None, "router": router_url,
                                        "urls": [d["url"] for d in st["instances"]], "routing": st["routing"]})
        self.profiles = profiles
        self._state = st
        self._seq = int(st["last_seq"])  # windows start now: earlier history is not ours
        self._records: collections.deque[RequestRecord] = collections.deque(maxlen=max_records)
        self._ended_total = 0   # records ever kept; ``_records`` holds the newest
        self._first_tokens: dict[int, float] = {}   # by request id, for the newest records
        self._counters = self._read_counters(st)
        self._window_start = 0.0
        self.scraper = Scraper([d["url"] for d in st["instances"]]) if scrape else None
        if self.scraper:
            self.scraper.window()  # baseline snapshot
        self.flip_events: collections.deque[dict] = collections.deque(maxlen=max_flip_events)
        self.flip_events_total = 0  # all flip events seen; flip_events holds the newest

    # ---- Cluster API ----------------------------------------------------------------------------
    @property
    def now(self) -> float:
        return time.monotonic() - self._t0_mono

    @property
    def info(self) -> ClusterInfo:
        return self._info

    def _to_cluster_time(self, router_t: float | None) -> float:
        return math.nan if router_t is None else router_t - self._router_offset - self._epoch0

    @property
    def scrape_lateness_s(self) -> list[float]:
        """Per instance: the age of the newest ``/metrics`` snapshot the last window used (0: fresh)."""
        if not self.scraper:
            return []
        return [self.scraper.lateness_s.get(u, 0.0) for u in self.scraper.urls]

    def instances(self) -> Sequence[InstanceView]:
        self._state = self.admin.state()
        return [_view(d) for d in self._state["instances"]]

    def flip(self, instance_id: int, role: Role) -> None:
        self.flip_many([Flip(instance_id, role)])

    def flip_many(self, flips: Sequence[Flip], source: str = "controller") -> dict:
        """Apply several flips atomically (the router validates all before applying any). The
        source is made a valid label first (a checkpoint folder may have any name)."""
        return self.admin.flip(flips, source=label_safe(source)) if flips else {"applied": []}

    def completed(self) -> Sequence[RequestRecord]:
        return list(self._records)

    def ended_since(self, start: int) -> list[RequestRecord]:
        """Records of the requests that ended after the first ``start``, as of the last window (the
        router's ``finish`` events are read at each ``advance``); of the newest ``max_records`` only."""
        skip = start - (self._ended_total - len(self._records))
        return list(itertools.islice(self._records, max(0, skip), None))

    def first_token_s(self, request_id: int) -> float:
        """When the client saw the request's first token (router's request id, cluster time). The
        router reports first tokens with the request's ``finish`` event, so this is NaN until the
        request has ended (and for a request that ended without one), as of the last window."""
        return self._first_tokens.get(request_id, math.nan)

    def flip_history(self) -> list[tuple[float, int, Role]]:
        """The router's flips of every source (controllers, the admin API, Algorithm 1), oldest
        first, as of the last window; the newest ``max_flip_events`` of them."""
        return [(float(e["t"]), int(e["instance"]), Role(e["new"])) for e in self.flip_events]

    def advance(self, dt: float) -> MetricsWindow:
        end = self._window_start + dt
        delay = end - self.now
        if delay > 0:
            time.sleep(delay)
        return self.collect()

    # ---- window -------------------------------------------------------------------------------
    @staticmethod
    def _read_counters(st: dict) -> dict[int, _Counters]:
        return {int(d["instance_id"]): _Counters(d["itl_sum_s"], d["itl_count"], d["decode_tokens_out"],
                                                 d["prefill_tokens_done"], d["busy_s"]) for d in st["instances"]}

    def _drain_events(self) -> list[dict]:
        out: list[dict] = []
        while True:
            page = self.admin.events(self._seq)
            out.extend(page["events"])
            if page["last_seq"] == self._seq or not page["events"]:
                break
            self._seq = page["last_seq"]
        return out

    def _keep_finish(self, e: dict) -> RequestRecord:
        """The record of one ``finish`` event, kept for ``completed``, ``ended_since`` and ``first_token_s``."""
        ok = e["status"] == 200
        first_token_s = self._to_cluster_time(e["first_token_s"])
        rec = RequestRecord(
            request_id=int(e["request_id"]), arrival_s=self._to_cluster_time(e["arrival_s"]),
            input_tokens=int(e["input_tokens"]), output_tokens=int(e["output_tokens"]),
            prefill_instance=int(e["prefill_instance"] if e["prefill_instance"] >= 0 else e["decode_instance"]),
            decode_instance=int(e["decode_instance"]),
            first_token_s=first_token_s if ok else math.nan,
            finish_s=self._to_cluster_time(e["finish_s"]) if ok else math.nan,
            rejected=not ok, reject_reason=e.get("error") or "",
        )
        self._records.append(rec)
        self._ended_total += 1
        self._first_tokens[rec.request_id] = first_token_s
        if len(self._first_tokens) > len(self._records):   # as bounded as the records
            del self._first_tokens[next(iter(self._first_tokens))]
        return rec

    def collect(self) -> MetricsWindow:
        """Build the window [last window end, now) from the router and the instances."""
        start, end = self._window_start, self.now
        events = self._drain_events()
        st = self.admin.state()
        self._state = st
        scraped: list[InstanceMetrics | None] = self.scraper.window(self.scrape_wait_s) if self.scraper \
            else [None] * len(st["instances"])
        counters = self._read_counters(st)
        views = [_view(d) for d in st["instances"]]
        slo = self._slo
        arrivals_in = [e["input_tokens"] for e in events if e["kind"] == "arrival"]
        ended = self._read_events(events)
        dur = max(end - start, 1e-9)
        inst_stats = [self._instance_stats(v, counters, scraped, ended, dur) for v in views]
        self._counters = counters
        mixed_ids = {v.instance_id for v in views if v.role is Role.MIXED}
        ok_finished = [r for r in ended.records if r.finished]
        prefill_pool, decode_pool = _pd_pools(inst_stats, views, mixed_ids, ended, ok_finished)
        window = MetricsWindow(
            start_s=start, end_s=end, prefill=prefill_pool, decode=decode_pool, instances=tuple(inst_stats),
            arrivals=len(arrivals_in), arrival_input_tokens_mean=_mean(arrivals_in), arrival_input_tokens_p90=_p90(arrivals_in),
            finished_output_tokens_mean=_mean([r.output_tokens for r in ok_finished]),
            finished=len(ok_finished), finished_within_slo=sum(1 for r in ok_finished if r.meets(slo)),
            ttft_violations=sum(1 for r in ok_finished if r.ttft_s > slo.ttft_s),
            tpot_violations=sum(1 for r in ok_finished if not math.isnan(r.tpot_s) and r.tpot_s > slo.tpot_s),
            rejected=sum(1 for r in ended.records if r.rejected),
            pending_predicted_ttft_misses=int(st.get("pending_predicted_ttft_misses", 0)),
            mixed=_mixed_pool(inst_stats, views, mixed_ids, ended.ttft_by_prefill, ended.tpot_by_decode, ok_finished),
        )
        self._window_start = end
        return window

    def _read_events(self, events: list[dict]) -> "_Ended":
        """Keep the window's flip events and the records of its finish events; the latencies of
        the requests that finished with a first token, by the instance that served each phase."""
        ended = _Ended()
        for e in events:
            if e["kind"] == "flip":
                self.flip_events.append({**e, "t": self._to_cluster_time(e["t"])})
                self.flip_events_total += 1
            if e["kind"] != "finish":
                continue
            rec = self._keep_finish(e)
            ended.records.append(rec)
            if not rec.rejected and not math.isnan(rec.first_token_s):
                ended.ttfts.append(rec.ttft_s)
                ended.ttft_by_prefill.setdefault(rec.prefill_instance, []).append(rec.ttft_s)
                if not math.isnan(rec.tpot_s):
                    ended.tpots.append(rec.tpot_s)
                    ended.tpot_by_decode.setdefault(rec.decode_instance, []).append(rec.tpot_s)
        return ended

    def _instance_stats(self, v: InstanceView, counters: dict[int, _Counters], scraped: list[InstanceMetrics | None],
                        ended: "_Ended", dur: float) -> InstanceWindowStats:
        """One instance's window: the router's counters since the last window, its scraped gauges
        (the router's own view when there are none), and its Arrow §5.5 loads."""
        i = v.instance_id
        c0, c1 = self._counters.get(i), counters[i]
        d_itl = c1.itl_sum_s - (c0.itl_sum_s if c0 else 0.0)
        n_itl = c1.itl_count - (c0.itl_count if c0 else 0)
        itl = d_itl / n_itl if n_itl > 0 else 0.0
        m = scraped[i] if i < len(scraped) else None
        prof = self.profiles.get(i)
        resident = (prof.prefill_time_sum(v.num_prefill, v.prefill_tokens, v.prefill_tokens_sq)
                    if prof else 0.0)
        return InstanceWindowStats(
            instance_id=i, role=v.role, ttft_mean=_mean(ended.ttft_by_prefill.get(i, [])), itl_mean=itl,
            prefill_tokens_computed=int(m.prompt_tokens) if m else c1.prefill_tokens_done - (c0.prefill_tokens_done if c0 else 0),
            decode_tokens_generated=int(m.generation_tokens) if m else c1.decode_tokens_out - (c0.decode_tokens_out if c0 else 0),
            busy_fraction=min(1.0, max(0.0, (c1.busy_s - (c0.busy_s if c0 else 0.0)) / dur)),
            waiting=int(m.waiting) if m else 0, running=int(m.running) if m else v.num_prefill + v.num_decode,
            kv_usage=float(m.kv_usage) if m else v.kv_usage,
            prefill_load=resident / self._slo.ttft_s,   # Arrow §5.5 prefill load
            decode_load=itl / self._slo.tpot_s,         # Arrow §5.5 decode load (mean token latency / SLO)
        )

    def start_replay(self, workload: Any, options: Any = None, seed: int = 0) -> None:
        """Send ``workload`` to the router in a background thread, arrivals relative to now
        (client-side records land in ``replay_records``)."""
        self.replay_records: list[RequestRecord] = []
        self.replay_thread = threading.Thread(
            target=_replay_thread, args=(self.info.extra["router"], workload, options, seed, self.replay_records),
            daemon=True, name="live-replay")
        self.replay_thread.start()

    def close(self) -> None:
        if self.scraper:
            self.scraper.close()
        self.admin.close()


@dataclass
class _Ended:
    """A window's ended requests, and the client-visible latencies of those that finished with a
    first token: all of them, and by the instance that served each phase."""

    records: list[RequestRecord] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    tpots: list[float] = field(default_factory=list)
    ttft_by_prefill: dict[int, list[float]] = field(default_factory=dict)
    tpot_by_decode: dict[int, list[float]] = field(default_factory=dict)


def _pd_pools(inst_stats: Sequence[InstanceWindowStats], views: Sequence[InstanceView], mixed_ids: set[int],
              ended: _Ended, ok_finished: Sequence[RequestRecord]) -> tuple[PoolStats, PoolStats]:
    """The prefill and decode pools' windows. With MIXED instances, what they served is the MIXED
    pool's and the P/D pools keep the rest; without, the P/D pools see the whole cluster's
    client-visible latencies (module docstring)."""
    ttfts, tpots = ended.ttfts, ended.tpots
    if mixed_ids:
        ttfts = [x for i, xs in ended.ttft_by_prefill.items() if i not in mixed_ids for x in xs]
        tpots = [x for i, xs in ended.tpot_by_decode.items() if i not in mixed_ids for x in xs]
    pd_stats = [s for s in inst_stats if s.instance_id not in mixed_ids]

    def pool(role: Role, load_of: Any, worked: set[int]) -> tuple[list[InstanceWindowStats], float]:
        members = [s for s in pd_stats if s.role is role]
        basis = members or [s for s in pd_stats if s.instance_id in worked]
        return members, _mean([load_of(s) for s in basis])

    did_decode = {s.instance_id for s in inst_stats if s.itl_mean > 0}
    did_prefill = {s.instance_id for s in inst_stats if s.prefill_load > 0}
    p_members, lp = pool(Role.PREFILL, lambda s: s.prefill_load, did_prefill)
    d_members, ld = pool(Role.DECODE, lambda s: s.decode_load, did_decode)
    itls = [s.itl_mean for s in pd_stats if s.itl_mean > 0]
    pd_finished = [r for r in ok_finished if r.decode_instance not in mixed_ids]
    prefill_pool = PoolStats(
        num_instances=len(p_members), ttft_mean=_mean(ttfts), ttft_p90=_p90(ttfts), first_tokens=len(ttfts),
        waiting=sum(s.waiting for s in p_members), running=sum(s.running for s in p_members),
        queued_prefill_tokens=sum(v.prefill_tokens for v in views if v.instance_id not in mixed_ids),
        kv_usage_mean=_mean([s.kv_usage for s in p_members]), load=lp,
    )
    decode_pool = PoolStats(
        num_instances=len(d_members), itl_mean=_mean(itls), tpot_mean=_mean(tpots), tpot_p90=_p90(tpots),
        finished=len(pd_finished), waiting=sum(s.waiting for s in d_members), running=sum(s.running for s in d_members),
        kv_usage_mean=_mean([s.kv_usage for s in d_members]), load=ld,
    )
    return prefill_pool, decode_pool


def _mixed_pool(inst_stats: Sequence[InstanceWindowStats], views: Sequence[InstanceView], mixed_ids: set[int],
                ttft_by_prefill: dict[int, list[float]], tpot_by_decode: dict[int, list[float]],
                ok_finished: Sequence[RequestRecord]) -> PoolStats:
    """The MIXED pool's window (an empty ``PoolStats`` without MIXED instances), as the emulator's:
    first tokens and finishes of the requests its instances served, and a load that is the mean
    over its instances of the larger of their §5.5 prefill and decode loads (both SLOs bind there)."""
    if not mixed_ids:
        return PoolStats()
    members = [s for s in inst_stats if s.instance_id in mixed_ids]
    fts = [x for i in mixed_ids for x in ttft_by_prefill.get(i, [])]
    tps = [x for i in mixed_ids for x in tpot_by_decode.get(i, [])]
    return PoolStats(
        num_instances=len(members), ttft_mean=_mean(fts), ttft_p90=_p90(fts), first_tokens=len(fts),
        itl_mean=_mean([s.itl_mean for s in members if s.itl_mean > 0]), tpot_mean=_mean(tps), tpot_p90=_p90(tps),
        finished=sum(1 for r in ok_finished if r.decode_instance in mixed_ids),
        waiting=sum(s.waiting for s in members), running=sum(s.running for s in members),
        queued_prefill_tokens=sum(v.prefill_tokens for v in views if v.instance_id in mixed_ids),
        kv_usage_mean=_mean([s.kv_usage for s in members]),
        load=_mean([max(s.prefill_load, s.decode_load) for s in members]),
    )


def live_cluster_factory(router_url: str, token: str, *, replay: bool = True, scrape: bool = True,
                         bench_options: Any = None):
    """A ``PDClusterEnv`` cluster factory (``envs.backends.ClusterFactory``) for a live cluster.

    Each reset sets the split the episode starts from, as the emulator backend does: ``num_prefill``
    PREFILL, the env config's ``emulator.num_mixed`` MIXED (drawn per episode by ``env.distribution``;
    0 for a P/D env, so MIXED instances left by an earlier episode become DECODE) and the rest DECODE,
    in one atomic batch of flips. With ``replay`` it
    replays the episode's workload against the router in a background thread (``bench.replay``),
    so the env's steps observe real traffic. The env's ``router`` argument is ignored: routing runs
    inside the router process (``POST /routing`` selects it).
    """
    def factory(workload, config, router, num_prefill: int, seed: int) -> LiveCluster:
        cl = LiveCluster(router_url, token, scrape=scrape)
        num_mixed = int((getattr(config, "emulator", None) or {}).get("num_mixed") or 0)
        flips = flips_to_roles(list(cl.roles()), num_prefill, num_mixed)
        if flips:
            cl.flip_many(flips, source="env-reset")
        if replay:
            cl.start_replay(workload, bench_options, seed)
        return cl

    return factory


def _replay_thread(url: str, workload, options, seed: int, out: list) -> None:
    opts = replace(options or BenchOptions(), seed=seed)
    out.extend(asyncio.run(replay(url, workload, opts)))

