"""Latency and SLO summaries of a run's request records (what ``arrow-rl simulate`` prints).

TTFT = first token − arrival; TPOT = (finish − first token) / (output tokens − 1) (Arrow §4.3,
vLLM's benchmarks), undefined for one-token outputs; e2e = finish − arrival. SLO attainment is the
fraction of *offered* requests meeting both SLOs (Arrow §6.1), so unfinished and rejected requests
count as misses.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from arrow_rl.cluster.base import SLO, RequestRecord

PERCENTILES = (50, 90, 99)


def _stats(prefix: str, values: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    if values.size == 0:
        out[f"{prefix}_mean"] = math.nan
        for p in PERCENTILES:
            out[f"{prefix}_p{p}"] = math.nan
        return out
    out[f"{prefix}_mean"] = float(values.mean())
    for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES)):
        out[f"{prefix}_p{p}"] = float(v)
    return out


def slo_attainment(records: Iterable[RequestRecord], slo: SLO, num_offered: int | None = None) -> float:
    """Fraction of offered requests that finished meeting both TTFT and TPOT SLOs (Arrow §6.1).

    ``num_offered`` defaults to the number of records; requests that never ended count as misses
    when it is larger."""
    records = list(records)
    offered = len(records) if num_offered is None else num_offered
    if offered < len(records):
        raise ValueError(f"num_offered ({offered}) is smaller than the number of records ({len(records)})")
    if offered == 0:
        return math.nan
    return sum(1 for r in records if r.meets(slo)) / offered


def summarize(records: Sequence[RequestRecord], slo: SLO | None = None,
              num_offered: int | None = None) -> dict[str, float]:
    """Summary statistics of ``records`` (seconds, requests/s, tokens/s).

    Keys: ``ttft_*``, ``tpot_*``, ``e2e_*`` for mean/p50/p90/p99 over finished requests (NaN when
    none), ``num_requests`` (offered), ``num_finished``, ``num_rejected``, ``throughput_rps`` and
    ``output_tokens_per_s`` (finished requests / tokens over first arrival → last finish), and with
    an SLO: ``slo_attainment``, ``slo_ttft_attainment``, ``slo_tpot_attainment``.
    """
    records = list(records)
    offered = len(records) if num_offered is None else int(num_offered)
    fin = [r for r in records if r.finished]
    ttft = np.array([r.ttft_s for r in fin], dtype=float)
    e2e = np.array([r.e2e_s for r in fin], dtype=float)
    tpot = np.array([r.tpot_s for r in fin if r.output_tokens > 1], dtype=float)
    out: dict[str, float] = {}
    out.update(_stats("ttft", ttft))
    out.update(_stats("tpot", tpot))
    out.update(_stats("e2e", e2e))
    out["num_requests"] = offered
    out["num_finished"] = len(fin)
    out["num_rejected"] = sum(1 for r in records if r.rejected)
    out["num_unfinished"] = offered - len(fin) - out["num_rejected"]
    if fin:
        start = min(r.arrival_s for r in records)
        end = max(r.finish_s for r in fin)
        span = end - start
        out["duration_s"] = float(span)
        out["throughput_rps"] = len(fin) / span if span > 0 else math.nan
        out["output_tokens_per_s"] = sum(r.output_tokens for r in fin) / span if span > 0 else math.nan
    else:
        out["duration_s"] = 0.0
        out["throughput_rps"] = 0.0
        out["output_tokens_per_s"] = 0.0
    out["preemptions"] = sum(r.preemptions for r in records)
    if slo is not None:
        out["slo_ttft_s"] = slo.ttft_s
        out["slo_tpot_s"] = slo.tpot_s
        out["slo_attainment"] = slo_attainment(records, slo, offered)
        if offered:
            out["slo_ttft_attainment"] = sum(1 for r in fin if r.ttft_s <= slo.ttft_s) / offered
            out["slo_tpot_attainment"] = sum(
                1 for r in fin if r.output_tokens <= 1 or r.tpot_s <= slo.tpot_s) / offered
        else:
            out["slo_ttft_attainment"] = out["slo_tpot_attainment"] = math.nan
    return out
