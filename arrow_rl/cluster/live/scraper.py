"""Prometheus scraping of vLLM instances, turned into windowed values.

vLLM exposes cumulative counters and histograms (vLLM's Prometheus ``/metrics``). A window's value is the difference
of two scrapes: a counter rate from Δvalue, a histogram mean from Δsum/Δcount and a quantile from
the bucket deltas. An instance that restarted has counters below the previous scrape (or a new
``_created`` timestamp); then the window counts from zero (the new process's value is the delta).
"""

from __future__ import annotations

import concurrent.futures
import math
import time
from dataclasses import dataclass, field
from typing import Iterable

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]


@dataclass
class Snapshot:
    """One scrape: every sample by (sample name, sorted labels), plus the scrape time."""

    time_s: float
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)  # family name -> prometheus type

    def series(self, name: str, **labels: str) -> dict[Labels, float]:
        """All series of sample ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return {lab: v for (n, lab), v in self.samples.items() if n == name and want <= set(lab)}

    def value(self, name: str, default: float = 0.0, **labels: str) -> float:
        """Sum over the matching series (gauges of one instance have one series per engine)."""
        s = self.series(name, **labels)
        return float(sum(s.values())) if s else default

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.samples)


def parse_metrics(text: str, time_s: float | None = None) -> Snapshot:
    """Parse a Prometheus text exposition (raises ValueError naming the bad line on bad input)."""
    snap = Snapshot(time.time() if time_s is None else time_s)
    try:
        for fam in text_string_to_metric_families(text):
            snap.types[fam.name] = fam.type
            for s in fam.samples:
                snap.samples[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    except ValueError as exc:
        raise ValueError(f"unparseable /metrics body: {exc}") from exc
    return snap


def _strip_le(lab: Labels) -> Labels:
    return tuple(kv for kv in lab if kv[0] != "le")


def _reset(prev: Snapshot | None, cur: Snapshot, base: str, labels: Labels) -> bool:
    """True when the series restarted between the scrapes (new ``_created`` or value went down)."""
    if prev is None:
        return True
    key = (base + "_created", labels)
    if key in prev.samples and key in cur.samples and prev.samples[key] != cur.samples[key]:
        return True
    return False


def counter_delta(prev: Snapshot | None, cur: Snapshot, name: str, **labels: str) -> float:
    """Δ of a counter sample (``..._total``) over the window, summed over matching series.
    Without a previous scrape the window is the counter's whole life."""
    base = name[:-6] if name.endswith("_total") else name
    total = 0.0
    for lab, v in cur.series(name, **labels).items():
        p = None if prev is None else prev.samples.get((name, lab))
        if p is None or v < p or _reset(prev, cur, base, lab):
            total += v  # first sight or restarted: the process counted from zero
        else:
            total += v - p
    return total


@dataclass(frozen=True)
class HistogramWindow:
    """Bucket counts of one histogram within a window (summed over matching series)."""

    count: float
    total: float
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count), ascending, ends at +Inf

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count > 0 else math.nan

    def quantile(self, q: float) -> float:
        """Prometheus ``histogram_quantile``: linear interpolation inside the bucket."""
        if self.count <= 0 or not self.buckets:
            return math.nan
        rank = q * self.count
        lo_bound, lo_count = 0.0, 0.0
        for bound, cum in self.buckets:
            if cum >= rank:
                if math.isinf(bound):
                    return lo_bound  # the highest finite bound, as Prometheus does
                if cum == lo_count:
                    return bound
                return lo_bound + (bound - lo_bound) * (rank - lo_count) / (cum - lo_count)
            lo_bound, lo_count = bound, cum
        return lo_bound


def histogram_window(prev: Snapshot | None, cur: Snapshot, name: str, **labels: str) -> HistogramWindow:
    """Windowed histogram ``name`` (the family name, without ``_bucket``/``_sum``/``_count``)."""
    count = total = 0.0
    buckets: dict[float, float] = {}
    for lab, c in cur.series(name + "_count", **labels).items():
        pc = None if prev is None else prev.samples.get((name + "_count", lab))
        restarted = pc is None or c < pc or _reset(prev, cur, name, lab)
        s = cur.samples.get((name + "_sum", lab), 0.0)
        if restarted:
            count += c
            total += s
        else:
            count += c - pc
            total += s - prev.samples.get((name + "_sum", lab), 0.0)
        for (n, blab), v in cur.samples.items():
            if n != name + "_bucket" or _strip_le(blab) != lab:
                continue
            le = float(dict(blab)["le"])
            pv = 0.0 if restarted else prev.samples.get((n, blab), 0.0)
            buckets[le] = buckets.get(le, 0.0) + v - pv
    return HistogramWindow(count, total, tuple(sorted(buckets.items())))


@dataclass(frozen=True)
class InstanceMetrics:
    """What one instance's ``/metrics`` says about a window (vLLM's metric names)."""

    running: float = 0.0
    waiting: float = 0.0
    kv_usage: float = 0.0
    kv_capacity_tokens: int = 0
    prompt_tokens: float = 0.0
    generation_tokens: float = 0.0
    external_kv_tokens: float = 0.0        # prompt tokens that arrived by P/D transfer
    local_prompt_tokens: float = 0.0
    ttft: HistogramWindow | None = None     # mixes prefill and decode legs on a kv_both instance
    itl: HistogramWindow | None = None
    failed_transfers: float = 0.0
    expired_kv: float = 0.0
    preemptions: float = 0.0
    restarted: bool = False


def kv_capacity_tokens(snap: Snapshot) -> int:
    """KV capacity from ``vllm:cache_config_info`` labels (num_gpu_blocks × block_size), 0 if absent."""
    for (n, lab), _ in snap.samples.items():
        if n == "vllm:cache_config_info":
            d = dict(lab)
            try:
                return int(float(d.get("num_gpu_blocks", 0))) * int(float(d.get("block_size", 0)))
            except ValueError:
                return 0
    return 0


def instance_window(prev: Snapshot | None, cur: Snapshot) -> InstanceMetrics:
    restarted = False
    if prev is not None:
        for (n, lab), v in cur.samples.items():
            if n.endswith("_total") and (n, lab) in prev.samples and v < prev.samples[(n, lab)]:
                restarted = True
                break
    return InstanceMetrics(
        running=cur.value("vllm:num_requests_running"),
        waiting=cur.value("vllm:num_requests_waiting"),
        kv_usage=cur.value("vllm:kv_cache_usage_perc"),
        kv_capacity_tokens=kv_capacity_tokens(cur),
        prompt_tokens=counter_delta(prev, cur, "vllm:prompt_tokens_total"),
        generation_tokens=counter_delta(prev, cur, "vllm:generation_tokens_total"),
        external_kv_tokens=counter_delta(prev, cur, "vllm:prompt_tokens_by_source_total",
                                         source="external_kv_transfer"),
        local_prompt_tokens=counter_delta(prev, cur, "vllm:prompt_tokens_by_source_total", source="local_compute"),
        ttft=histogram_window(prev, cur, "vllm:time_to_first_token_seconds"),
        itl=histogram_window(prev, cur, "vllm:inter_token_latency_seconds"),
        failed_transfers=counter_delta(prev, cur, "vllm:nixl_num_failed_transfers_total"),
        expired_kv=counter_delta(prev, cur, "vllm:nixl_num_kv_expired_reqs_total"),
        preemptions=counter_delta(prev, cur, "vllm:num_preemptions_total"),
        restarted=restarted,
    )


def quick_kv(text: str) -> tuple[float, int]:
    """(KV usage 0..1, KV capacity in tokens) by scanning for two lines only: the router polls this
    every health interval, and a full parse of vLLM's ~600-line body costs ~70 ms of CPU."""
    usage, capacity = 0.0, 0
    for line in text.splitlines():
        if line.startswith("vllm:kv_cache_usage_perc{") or line.startswith("vllm:kv_cache_usage_perc "):
            try:
                usage = float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                pass
        elif line.startswith("vllm:cache_config_info{"):
            labels = dict(kv.split("=", 1) for kv in line[line.index("{") + 1: line.rindex("}")].split(",") if "=" in kv)
            try:
                capacity = int(float(labels.get("num_gpu_blocks", "0").strip('"'))) * int(
                    float(labels.get("block_size", "0").strip('"')))
            except ValueError:
                capacity = 0
    return usage, capacity


class Scraper:
    """Polls instances' ``/metrics`` and keeps the previous snapshot of each, so every call to
    ``window`` returns values for the time since the last complete scrape. An instance that cannot
    be scraped, or whose scrape is still running when the window closes, yields ``None`` for that
    window (and keeps its old snapshot): the control loop decides on what is complete and never
    waits long for a slow instance. A late scrape is not thrown away: it finishes in the
    background and its snapshot serves the next window. ``lateness_s[url]`` is the age of the
    newest snapshot the last window could use (0 when it was fresh)."""

    def __init__(self, urls: Iterable[str], timeout_s: float = 2.0, client=None) -> None:
        import httpx

        self.urls = [u.rstrip("/") for u in urls]
        self.timeout_s = timeout_s
        self._client = client or httpx.Client(timeout=timeout_s)
        self._prev: dict[str, Snapshot] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._inflight: dict[str, concurrent.futures.Future] = {}
        self._taken: dict[str, float] = {}          # time.monotonic() of each newest snapshot
        self.lateness_s: dict[str, float] = {u: 0.0 for u in self.urls}
        self.late_windows = 0                       # windows in which some scrape was not complete

    def scrape(self, url: str) -> Snapshot:
        r = self._client.get(url + "/metrics")
        r.raise_for_status()
        return parse_metrics(r.text)

    def _try_scrape(self, url: str) -> tuple[Snapshot | None, float]:
        try:
            return self.scrape(url), time.monotonic()
        except Exception:  # noqa: BLE001 - a dead or stalled instance is a window without metrics
            return None, time.monotonic()

    def window(self, wait_s: float | None = None) -> list[InstanceMetrics | None]:
        """All instances are scraped at once, and the call waits at most ``wait_s`` (default
        ``timeout_s``) for them: a control step never waits for the sum of the scrapes, nor
        longer than ``wait_s`` for a slow one (a busy vLLM-CPU API server can take seconds)."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(16, max(1, len(self.urls))),
                                                               thread_name_prefix="scrape")
        for url in self.urls:
            if url not in self._inflight:   # a scrape still running from an earlier window is not doubled
                self._inflight[url] = self._pool.submit(self._try_scrape, url)
        concurrent.futures.wait([self._inflight[u] for u in self.urls],
                                timeout=self.timeout_s if wait_s is None else wait_s)
        now = time.monotonic()
        out: list[InstanceMetrics | None] = []
        late = False
        for url in self.urls:
            fut = self._inflight[url]
            if not fut.done():
                late = True
                out.append(None)
                self.lateness_s[url] = now - self._taken.get(url, now)
                continue
            del self._inflight[url]
            cur, taken = fut.result()
            if cur is None:
                out.append(None)
                self.lateness_s[url] = now - self._taken.get(url, now)
                continue
            out.append(instance_window(self._prev.get(url), cur))
            self._prev[url] = cur
            self._taken[url] = taken
            self.lateness_s[url] = 0.0
        self.late_windows += late
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
