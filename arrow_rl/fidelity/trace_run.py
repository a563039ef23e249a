"""A real run as one stage: the requests that were sent, how they were sent, and what was measured.

Every format other than inference-perf's multi-stage folders (per-request records, ``vllm bench
serve`` results) is read into a :class:`TraceRun`: the server's knobs and topology, the request
stream (per-request arrivals and token counts, or a rate / closed-loop concurrency and fixed
lengths) and one :class:`TraceStage` of measured means. The replay (``trace_replay.py``) rebuilds
the same stream on the emulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arrow_rl.fidelity.runs import RunFormatError

# A per-request run is saturated when the queue grows through it: the last fifth of its requests
# wait this many times longer for their first token than the first fifth, and at least this long
# (or, for the client's own backlog, are sent at least this long behind their planned time).
QUEUE_GROWTH_FACTOR = 3.0
QUEUE_GROWTH_MIN_S = 1.0
# A `vllm bench serve` result has no per-request times; past this mean TTFT the requests queued
# (the longest prompt in these runs prefills in well under a second).
BENCH_SATURATED_TTFT_S = 5.0


class UnsupportedRun(ValueError):
    """A well-formed run the emulator cannot reproduce (the message says which feature and where)."""


@dataclass(frozen=True)
class Topology:
    """How the real deployment was laid out: colocated replicas, or P prefill + D decode instances."""

    colocated: int = 1          # replicas serving whole requests (0 when disaggregated)
    prefill: int = 0
    decode: int = 0
    tp_prefill: int = 1
    tp_decode: int = 1
    connector: str | None = None  # KV connector of a disaggregated run (e.g. "nixl")

    @property
    def disaggregated(self) -> bool:
        return self.prefill > 0

    @property
    def num_instances(self) -> int:
        return self.prefill + self.decode if self.disaggregated else self.colocated

    def label(self) -> str:
        if self.disaggregated:
            return (f"{self.prefill}P(TP{self.tp_prefill})+{self.decode}D(TP{self.tp_decode})"
                    + (f" {self.connector}" if self.connector else ""))
        return f"{self.colocated}x colocated TP{self.tp_prefill}"


@dataclass(frozen=True)
class TraceStage:
    """The measured means of one run (seconds; TPOT per request over its own output length)."""

    index: int
    rate: float                  # offered req/s; closed-loop runs: the achieved rate
    concurrency: int | None
    duration_s: float
    sent: int
    finished: int
    ttft_mean: float
    tpot_mean: float
    e2e_mean: float
    throughput_rps: float        # finished / (last finish − first send)
    saturated: bool


@dataclass(frozen=True)
class TraceRun:
    """One real run of any per-request or benchmark format, as one stage."""

    name: str
    path: Path
    kind: str                          # the format, for reports
    model: str
    tensor_parallelism: int
    gpu: str | None                    # as the run states it (device name), when it does
    max_num_batched_tokens: int | None  # None: the preset's serve defaults
    max_num_seqs: int | None
    num_gpu_blocks: int | None         # the server's reported KV capacity, when stated
    topology: Topology
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    arrivals: np.ndarray | None        # per-request send times from 0; None: drawn from rate/concurrency
    rate: float | None                 # Poisson rate of the sends (None or inf: as fast as allowed)
    concurrency: int | None            # closed loop: at most this many requests in flight
    api_server: bool                   # False: requests entered the engine in-process (no frontend)
    shared_prompt: bool                # every prompt is one shared, cached prefix (decode-only runs)
    stage: TraceStage
    seed: int = 0
    burstiness: float = 1.0            # gamma shape of the inter-send times (1: Poisson)
    warmup_requests: int = 0           # the first requests sent, left out of the emulated means

    @property
    def stages(self) -> tuple[TraceStage, ...]:
        return (self.stage,)


def queue_grew(arrivals: np.ndarray, ttft: np.ndarray) -> bool:
    """True when the last fifth of requests (by send time) waited far longer than the first fifth."""
    if ttft.size < 10:
        return False
    order = np.argsort(arrivals, kind="stable")
    k = max(ttft.size // 5, 1)
    first, last = float(ttft[order[:k]].mean()), float(ttft[order[-k:]].mean())
    return last > max(QUEUE_GROWTH_FACTOR * first, QUEUE_GROWTH_MIN_S)


def client_backlog(intended: np.ndarray, sent: np.ndarray) -> bool:
    """True when the client fell behind its own schedule: the last fifth of requests went out far
    later than planned (a load generator that caps requests in flight hides queueing from TTFT)."""
    if intended.size < 10:
        return False
    order = np.argsort(intended, kind="stable")
    lag = (sent[order] - sent[order][0]) - (intended[order] - intended[order][0])
    return float(lag[-max(lag.size // 5, 1):].mean()) > QUEUE_GROWTH_MIN_S


def measured_stage(arrivals: np.ndarray, ttft: np.ndarray, e2e: np.ndarray, output_tokens: np.ndarray,
                   sent: int, *, rate: float | None = None, concurrency: int | None = None,
                   backlog: bool = False) -> TraceStage:
    """The stage's means from per-request times (finished requests only; seconds from their send).
    ``backlog``: the client could not send at its planned rate (:func:`client_backlog`)."""
    finish = arrivals + e2e
    span = float(finish.max() - arrivals.min()) if finish.size else 0.0
    tpot = (e2e - ttft) / np.maximum(output_tokens - 1, 1)
    offered = rate if rate is not None and np.isfinite(rate) else (
        (arrivals.size - 1) / float(arrivals.max() - arrivals.min()) if arrivals.size > 1
        and arrivals.max() > arrivals.min() else 0.0)
    return TraceStage(index=0, rate=float(offered), concurrency=concurrency, duration_s=span, sent=sent,
                      finished=int(e2e.size), ttft_mean=float(ttft.mean()), tpot_mean=float(tpot.mean()),
                      e2e_mean=float(e2e.mean()), throughput_rps=e2e.size / span if span > 0 else 0.0,
                      saturated=backlog or sent > e2e.size or queue_grew(arrivals, ttft))


def field_number(row: dict, key: str, path: Path, line: int, *, integer: bool = False,
                 positive: bool = False) -> float:
    """``row[key]`` as a finite number (an integer >= 1 with ``integer``); the error names file, line, field."""
    kind = "an integer" if integer else "a number"
    try:
        v = float(row[key])
    except (KeyError, TypeError, ValueError):
        raise RunFormatError(f"{path} line {line}: field {key!r} must be {kind}, got {row.get(key)!r}") from None
    if not np.isfinite(v):
        raise RunFormatError(f"{path} line {line}: field {key!r} must be finite, got {row[key]!r}")
    if integer and v < 1:
        raise RunFormatError(f"{path} line {line}: field {key!r} must be >= 1, got {row[key]!r}")
    if positive and not v > 0:
        raise RunFormatError(f"{path} line {line}: field {key!r} must be > 0, got {row[key]!r}")
    return int(v) if integer else v


def read_csv_rows(path: Path, need: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of a CSV file with at least the columns ``need`` (error: the first one missing)."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            check_columns(path, set(reader.fieldnames or ()), need)
            return list(reader)
    except UnicodeDecodeError as exc:
        raise RunFormatError(f"{path}: not a UTF-8 CSV file: {exc}") from None


def check_columns(path: Path, have: set[str], need: tuple[str, ...]) -> None:
    missing = [c for c in need if c not in have]
    if missing:
        raise RunFormatError(f"{path}: missing field {missing[0]!r}")


__all__ = ["BENCH_SATURATED_TTFT_S", "Topology", "client_backlog", "TraceRun", "TraceStage", "UnsupportedRun", "check_columns",
           "field_number", "measured_stage", "queue_grew", "read_csv_rows"]
