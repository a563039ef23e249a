"""The latency-model interface the emulator and the Arrow profiler rely on.

Implementations (fitted on real GPU profiles) live beside this file; see ``presets.py``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class LatencyModel(Protocol):
    """Time of one vLLM engine iteration as a function of the batch's composition."""

    def iteration_time(self, prefill_tokens: int, prefill_attention: float, decode_seqs: int,
                       decode_context: int) -> float:
        """Seconds for one iteration.

        Args:
            prefill_tokens: Σ c_j, prompt tokens computed this iteration over all prefill chunks.
            prefill_attention: Σ c_j·(k_j + c_j/2), query-key pairs of those chunks, where chunk j
                has c_j new tokens after k_j tokens of already-computed context.
            decode_seqs: number of sequences decoding one token this iteration.
            decode_context: Σ context length (tokens) over those sequences.
        """
        ...

    def decode_time_coefficients(self, decode_seqs: int) -> tuple[float, float]:
        """(intercept, slope) of a decode-only iteration: t = intercept + slope·decode_context.

        The emulator uses this to sum a run of decode iterations in closed form (each iteration
        adds ``decode_seqs`` tokens of context), instead of stepping every iteration in Python.
        Must agree with ``iteration_time(0, 0, decode_seqs, ctx)``.
        """
        ...
