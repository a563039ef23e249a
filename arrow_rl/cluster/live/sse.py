"""Server-sent events as the router relays them: split a byte stream into events, nothing more.

vLLM (and the fake) frame each event as ``data: <json>\\n\\n`` and end with ``data: [DONE]\\n\\n``,
but TCP delivers them split anywhere: half an event, several events, an event split inside its
``\\n\\n``. :class:`EventSplitter` holds the partial tail between reads, so the relay sees whole
events only and can forward everything it has in one write.
"""

from __future__ import annotations

SEP = b"\n\n"


class EventSplitter:
    """Cut a stream of bytes into complete SSE events (without their ``\\n\\n`` separator)."""

    __slots__ = ("tail",)

    def __init__(self) -> None:
        self.tail = b""

    def feed(self, data: bytes) -> list[bytes]:
        """The events completed by ``data``, in order; an incomplete last one waits for more."""
        if self.tail:
            data = self.tail + data
        if SEP not in data:
            self.tail = data
            return []
        events = data.split(SEP)
        self.tail = events.pop()
        return events
