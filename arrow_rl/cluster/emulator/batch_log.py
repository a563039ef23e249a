"""The opt-in record of the batches an emulated instance plans (``EmulatedCluster.batch_log``).

It exists so a test can set the emulator's batch former beside vLLM's own scheduler and diff what
each schedules, iteration by iteration (tests/test_vllm_scheduler_conformance.py).
"""

from __future__ import annotations

from typing import NamedTuple


class BatchLogEntry(NamedTuple):
    """One planned batch: on ``instance`` from ``start_s``, ``tokens[request index]`` tokens per
    request (1 per decode sequence, the chunk size per prompt), repeated for ``iterations``
    identical iterations (a closed-form decode run; 1 with ``exact_stepping``)."""

    instance: int
    start_s: float
    tokens: dict[int, int]
    iterations: int
