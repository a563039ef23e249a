"""Summary statistics of a workload: the numbers that say what load it puts on a cluster.

Same definitions as ``data/README.md`` so ``arrow-rl workload info`` reproduces that table:
interarrival CV is std/mean of the gaps; dispersion is var/mean of per-second arrival counts
(1 for Poisson, >1 for bursty traffic).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from arrow_rl.workload.workload import Workload


@dataclass(frozen=True)
class TokenStats:
    mean: float
    median: float
    p90: float
    p99: float
    max: int

    @classmethod
    def of(cls, tokens: np.ndarray) -> "TokenStats":
        if tokens.size == 0:
            return cls(0.0, 0.0, 0.0, 0.0, 0)
        p50, p90, p99 = np.percentile(tokens, [50, 90, 99])
        return cls(float(tokens.mean()), float(p50), float(p90), float(p99), int(tokens.max()))


@dataclass(frozen=True)
class WorkloadStats:
    rows: int
    span_s: float
    mean_rate: float
    interarrival_cv: float
    dispersion_1s: float
    max_per_second: int
    input: TokenStats
    output: TokenStats

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(workload: Workload) -> WorkloadStats:
    arrival = workload.arrival_s
    gaps = np.diff(arrival)
    cv = float(gaps.std() / gaps.mean()) if gaps.size and gaps.mean() > 0 else 0.0
    if arrival.size:
        counts = np.bincount(np.floor(arrival - arrival[0]).astype(np.int64))
        dispersion = float(counts.var() / counts.mean()) if counts.mean() > 0 else 0.0
        peak = int(counts.max())
    else:
        dispersion, peak = 0.0, 0
    return WorkloadStats(
        rows=len(workload), span_s=workload.duration_s, mean_rate=workload.mean_rate,
        interarrival_cv=cv, dispersion_1s=dispersion, max_per_second=peak,
        input=TokenStats.of(workload.input_tokens), output=TokenStats.of(workload.output_tokens),
    )
