"""The router's own Prometheus metrics (``GET /metrics``): outcomes, retries, flips, latencies,
and per-instance role, health and in-flight legs.

Latency histograms are observed on the request path, so they are queued and applied in batches
(``arrow_rl.cluster.live.metrics.BatchedHistogram``), always before a scrape renders them.
"""

from __future__ import annotations

from typing import Any, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from arrow_rl.cluster.base import Role
from arrow_rl.cluster.live.metrics import BatchedHistogram
from arrow_rl.cluster.live.state import InstanceState

ROLE_GAUGE = {Role.PREFILL: 1, Role.DECODE: 0, Role.MIXED: 2}   # arrow_router_instance_role
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class RouterMetrics:
    """One registry per router. ``max_flip_sources`` bounds the flip counter's label values."""

    def __init__(self, max_flip_sources: int) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("arrow_router_requests", "Client requests by outcome", ["outcome", "path"], registry=r)
        self.retries = Counter("arrow_router_retries", "Legs retried as plain requests", ["leg"], registry=r)
        self.retries_prefill = self.retries.labels(leg="prefill")
        self.retries_decode = self.retries.labels(leg="decode")
        self._requests: dict[tuple[str, str], Any] = {}  # label children, looked up once
        self.flips = Counter("arrow_router_flips", "Applied role flips", ["source"], registry=r)
        self._max_flip_sources = max_flip_sources
        self._flip_sources: set[str] = set()
        self.ttft = self._histogram("arrow_router_ttft_seconds", "Client-visible time to first token")
        self.tpot = self._histogram("arrow_router_tpot_seconds", "Time per output token after the first")
        self.prefill_leg = self._histogram("arrow_router_prefill_leg_seconds", "Prefill leg latency")
        self.decode_first = self._histogram("arrow_router_decode_leg_first_chunk_seconds",
                                            "Decode leg: request sent to first chunk (KV pull + first step)")
        self._histograms = (self.ttft, self.tpot, self.prefill_leg, self.decode_first)
        self.role = Gauge("arrow_router_instance_role", "1 if the instance is in the prefill pool, 0 if decode, "
                          "2 if mixed", ["instance"], registry=r)
        self.healthy = Gauge("arrow_router_instance_healthy", "1 if healthy", ["instance"], registry=r)
        self.inflight = Gauge("arrow_router_instance_inflight", "In-flight legs", ["instance", "phase"], registry=r)

    def _histogram(self, name: str, help_text: str) -> BatchedHistogram:
        return BatchedHistogram(Histogram(name, help_text, buckets=LATENCY_BUCKETS_S, registry=self.registry))

    def count_request(self, outcome: str, path: str) -> None:
        """One ended client request (``outcome``: ok | error; ``path``: the Flight's path)."""
        key = (outcome, path)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(outcome=outcome, path=path)
        counter.inc()

    def count_flip(self, source: str) -> None:
        """A flip applied through the admin API (``source`` as the caller named it)."""
        self.flips.labels(source=self._source_label(source)).inc()

    def count_alg1_flip(self) -> None:
        """A flip Algorithm 1 made while routing (label ``alg1``, outside the bounded set)."""
        self.flips.labels(source="alg1").inc()

    def _source_label(self, source: str) -> str:
        """The flip counter's label value for ``source``: itself while fewer than
        ``max_flip_sources`` distinct values exist, else ``other`` (a bounded label set)."""
        if source in self._flip_sources:
            return source
        if len(self._flip_sources) < self._max_flip_sources:
            self._flip_sources.add(source)
            return source
        return "other"

    def render(self, instances: Sequence[InstanceState]) -> bytes:
        """The exposition text, after the gauges are read from ``instances`` and the queued
        histogram observations applied."""
        for s in instances:
            i = str(s.instance_id)
            self.role.labels(i).set(ROLE_GAUGE[s.role])
            self.healthy.labels(i).set(1 if s.healthy else 0)
            self.inflight.labels(i, "prefill").set(s.num_prefill)
            self.inflight.labels(i, "decode").set(s.num_decode)
        for h in self._histograms:
            h.flush()
        return generate_latest(self.registry)
