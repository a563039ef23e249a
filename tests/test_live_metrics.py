"""BatchedHistogram: a batch applied to a Prometheus histogram equals observing each value."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from arrow_rl.cluster.live.metrics import BatchedHistogram

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 1, 10)
VALUES = [0.0, 0.005, 0.0050001, 0.3, 1.0, 10.0, 11.0, math.inf, math.nan, 0.01, 1e-9, 0.7, 0.1]


def _exposition(hist: Histogram, registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def _pair() -> tuple[Histogram, CollectorRegistry, Histogram, CollectorRegistry]:
    ra, rb = CollectorRegistry(), CollectorRegistry()
    return (Histogram("h", "h", buckets=BUCKETS, registry=ra), ra, Histogram("h", "h", buckets=BUCKETS, registry=rb), rb)


def test_flushed_batch_matches_observing_each_value() -> None:
    direct, ra, batched_hist, rb = _pair()
    batched = BatchedHistogram(batched_hist)
    for v in VALUES:
        direct.observe(v)
        batched.observe(v)
    batched.flush()
    assert _exposition(direct, ra) == _exposition(batched_hist, rb)


def test_queue_is_applied_when_it_reaches_the_limit() -> None:
    direct, ra, batched_hist, rb = _pair()
    batched = BatchedHistogram(batched_hist, limit=5)
    for v in VALUES[:5]:
        direct.observe(v)
        batched.observe(v)
    assert batched.pending == []  # bounded memory: applied at the limit, no scrape needed
    assert _exposition(direct, ra) == _exposition(batched_hist, rb)
