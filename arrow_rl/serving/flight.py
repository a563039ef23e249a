"""One client request on its way through the router, and what the data path answers with.

A :class:`Flight` becomes a journal line, an ``/events`` ``finish`` event and a ``RequestRecord``
when the request ends; a :class:`LegError` is a leg that produced no usable answer; a
:class:`Reply` is a whole (non-streamed) response for ``httpserver.ClientConnection.reply``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from arrow_rl.cluster.live.validation import error_body

MAX_XID = 200   # a client's X-Request-Id is kept (journal, logs, upstream) up to this many bytes


class LegError(Exception):
    """A leg that did not produce a usable response. ``retryable``: nothing reached the client and
    the failure is the instance's (connection, timeout, 5xx), so one plain retry elsewhere is safe."""

    def __init__(self, message: str, status: int = 502, retryable: bool = True, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.body = body


@dataclass
class Flight:
    """One client request's journey (becomes a journal line and a ``RequestRecord``)."""

    request_id: int
    x_request_id: str
    arrival_s: float
    input_tokens: int
    max_tokens: int
    stream: bool
    chat: bool
    path: str = ""                  # disaggregated | local | plain | retry | mixed
    prefill_instance: int = -1
    decode_instance: int = -1
    prefill_start_s: float = math.nan
    prefill_end_s: float = math.nan
    decode_start_s: float = math.nan
    first_token_s: float = math.nan
    finish_s: float = math.nan
    output_tokens: int = 0
    kv_transfer: bool = False
    retried: bool = False
    status: int = 0
    error: str = ""
    ttft_source: str = ""           # stream (first SSE chunk) | prefill_leg | response
    # Why the request left the plain hand-off path: each failed leg ("decode@1: instance 1 answered
    # HTTP 500: ...") and each routing fallback ("decode routed to 0, unhealthy (timeout) -> 1").
    # Journaled, so a request served plain or retried can be explained after the fact.
    notes: list[str] = field(default_factory=list)


# Flight's float fields that stay NaN until their moment comes (None in the journal and /events).
FLIGHT_TIMES = tuple(k for k, t in Flight.__annotations__.items() if t == "float")


class Reply:
    """A whole data-path response: status, JSON body, preformatted extra header lines, and the
    successful flight it answers (journaled once the response has left the router's buffer)."""

    __slots__ = ("status", "body", "extra", "close", "flight")

    def __init__(self, status: int, body: bytes, extra: bytes = b"", close: bool = False,
                 flight: "Flight | None" = None) -> None:
        self.status, self.body, self.extra, self.close = status, body, extra, close
        self.flight = flight


def xid_header(xid: str) -> bytes:
    """The ``x-request-id`` response header line, preformatted."""
    return b"x-request-id: " + xid.encode("latin-1", "replace") + b"\r\n"


def error_reply(status: int, message: str, param: str | None = None) -> Reply:
    """vLLM's error object; a 413 also closes the connection (the rest of the body is unread)."""
    return Reply(status, orjson.dumps(error_body(status, message, param)), close=status == 413)


def json_or_text(content: bytes) -> Any:
    """An instance's error body: its JSON when it is JSON, else its text."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return content.decode("utf-8", "replace")


def short(x: Any, n: int = 300) -> str:
    """``x`` (a string, or JSON of anything else) cut to ``n`` characters for a message."""
    s = x if isinstance(x, str) else orjson.dumps(x).decode()
    return s if len(s) <= n else s[:n] + "…"
