"""The emulator's event queue: typed event kinds on one heap.

An event is a tuple ``(time, kind, seq, a, b)``: the heap orders equal times by kind, then by push
order (``seq``), which makes every run deterministic. ``a`` and ``b`` are the kind's two integer
arguments (listed on ``EventKind``). Events are never removed: an event whose version ``b`` no
longer matches its subject's (a re-planned iteration, a rescheduled transfer) is stale and skipped
when it is popped, which is cheaper than deleting from a heap. Arrivals are not events: the engine
reads them from the workload in order.
"""

from __future__ import annotations

from enum import IntEnum
from heapq import heappush as _heappush


class EventKind(IntEnum):
    KV_LANDED = 0        # a KV transfer landed: a = request, b = its transfer version
    ITERATION_END = 1    # an instance's planned iteration(s) end: a = instance, b = its plan version
    FLIP_DELAY_END = 2   # an instance admits work again after a flip delay: a = instance
    LEASE_CHECK = 3      # the oldest pending KV lease may have expired
    NIC_BYTES_SENT = 4       # a transfer sharing a NIC sent its last byte: a = request, b = transfer version


class EventQueue:
    """A heap of ``(time, kind, seq, a, b)`` tuples with a push counter."""

    __slots__ = ("heap", "seq")

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, int, int, int]] = []
        self.seq = 0

    def push(self, t: float, kind: int, a: int, b: int) -> None:
        seq = self.seq + 1
        self.seq = seq
        _heappush(self.heap, (t, kind, seq, a, b))

    def copy(self) -> "EventQueue":
        new = EventQueue()
        new.heap = list(self.heap)
        new.seq = self.seq
        return new


KV_LANDED, ITERATION_END, FLIP_DELAY_END, LEASE_CHECK, NIC_BYTES_SENT = EventKind
