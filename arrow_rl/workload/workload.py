"""The in-memory workload: three aligned numpy columns, one row per request.

Columns rather than per-request objects because the emulator replays tens of thousands of
requests per second of wall time and the loaders, rate scaling and windowing are all vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Request:
    """One request as the cluster sees it at arrival time."""

    request_id: int
    arrival_s: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Workload:
    """A replayable request stream: arrival times (s, non-decreasing, from 0) and token counts.

    ``output_tokens`` is the number of tokens the request will generate; the emulator uses it to
    know when a request finishes, a live cluster passes it as ``max_tokens`` with ``ignore_eos``.
    """

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    name: str = "workload"
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        arrival = np.ascontiguousarray(self.arrival_s, dtype=np.float64)
        inputs = np.ascontiguousarray(self.input_tokens, dtype=np.int64)
        outputs = np.ascontiguousarray(self.output_tokens, dtype=np.int64)
        if not (arrival.shape == inputs.shape == outputs.shape) or arrival.ndim != 1:
            raise ValueError(
                f"workload {self.name!r}: columns must be 1-D and the same length, got "
                f"{arrival.shape}, {inputs.shape}, {outputs.shape}"
            )
        if arrival.size and np.any(np.diff(arrival) < 0):
            bad = int(np.argmax(np.diff(arrival) < 0)) + 1
            raise ValueError(f"workload {self.name!r}: arrivals decrease at row {bad}")
        if inputs.size and inputs.min() < 1:
            raise ValueError(f"workload {self.name!r}: input_tokens must be >= 1 (row {int(np.argmin(inputs))})")
        if outputs.size and outputs.min() < 1:
            raise ValueError(f"workload {self.name!r}: output_tokens must be >= 1 (row {int(np.argmin(outputs))})")
        object.__setattr__(self, "arrival_s", arrival)
        object.__setattr__(self, "input_tokens", inputs)
        object.__setattr__(self, "output_tokens", outputs)

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def duration_s(self) -> float:
        """Time from the first to the last arrival."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) else 0.0

    @property
    def mean_rate(self) -> float:
        """Mean request rate in requests per second over the trace's span."""
        span = self.duration_s
        return (len(self) - 1) / span if span > 0 else 0.0

    def request(self, index: int) -> Request:
        return Request(
            request_id=index,
            arrival_s=float(self.arrival_s[index]),
            input_tokens=int(self.input_tokens[index]),
            output_tokens=int(self.output_tokens[index]),
        )

    def scaled(self, rate_scale: float) -> "Workload":
        """Multiply the request rate by ``rate_scale`` by dividing every timestamp (Arrow §6.1)."""
        if not rate_scale > 0:
            raise ValueError(f"rate_scale must be > 0, got {rate_scale}")
        return Workload(self.arrival_s / rate_scale, self.input_tokens, self.output_tokens,
                        name=f"{self.name}@x{rate_scale:g}", source=self.source)

    def window(self, start_s: float, end_s: float) -> "Workload":
        """Requests arriving in [start_s, end_s), re-based so the window starts at time 0."""
        lo = int(np.searchsorted(self.arrival_s, start_s, side="left"))
        hi = int(np.searchsorted(self.arrival_s, end_s, side="left"))
        return Workload(self.arrival_s[lo:hi] - start_s, self.input_tokens[lo:hi], self.output_tokens[lo:hi],
                        name=f"{self.name}[{start_s:g}:{end_s:g}]", source=self.source)

    def head(self, n: int) -> "Workload":
        return Workload(self.arrival_s[:n], self.input_tokens[:n], self.output_tokens[:n],
                        name=f"{self.name}[:{n}]", source=self.source)

    def to_csv(self, path: str | Path) -> None:
        """Write the canonical CSV (``arrival_s,input_tokens,output_tokens``)."""
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("arrival_s,input_tokens,output_tokens\n")
            for a, i, o in zip(self.arrival_s.tolist(), self.input_tokens.tolist(), self.output_tokens.tolist()):
                fh.write(f"{a:.6f},{i},{o}\n")
