"""The decode leg's SSE stream, relayed from the upstream connection to the client as it arrives.

Serving (docs/live_cluster.md, "Speed"): a streamed decode leg is relayed by :class:`StreamRelay`
from the upstream connection's ``data_received`` straight to the client's transport: whatever one
socket read carried, split into whole SSE events (``sse.EventSplitter``), scanned for tokens, usage
and errors, and written in one write. Before the relay starts, :func:`first_decisive_event` tells
whether the stream may go to the client at all (an error before the first token is retried).
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from arrow_rl.cluster.live.sse import SEP as SSE_SEP, EventSplitter
from arrow_rl.cluster.live.state import InstanceState, RouterState
from arrow_rl.cluster.live.upstream import UpstreamClosed, UpstreamConnection, UpstreamError, UpstreamTimeout
from arrow_rl.cluster.live.validation import error_body
from arrow_rl.serving.flight import Flight, short, xid_header
from arrow_rl.serving.httpserver import ClientConnection
from arrow_rl.serving.router_metrics import RouterMetrics

_loads = orjson.loads


class RelayOwner(Protocol):
    """What a relay needs of the router: its bookkeeping, and where an ended request goes."""

    state: RouterState
    metrics: RouterMetrics
    _streaming: list[set["StreamRelay"]]   # per instance: the streams being relayed from it

    def _probe(self, s: InstanceState) -> None: ...

    def _record(self, f: Flight, rejected: bool) -> None: ...

    def _finish_ok(self, f: Flight) -> None: ...


class StreamRelay:
    """The decode leg's SSE stream, relayed to the client as it arrives.

    The upstream connection calls :meth:`on_body` from its ``data_received`` with every byte one
    socket read carried; the complete events in it are scanned (token counts, the usage chunk,
    errors, ``[DONE]``) and forwarded in one write. No task, no await, no per-event
    re-serialisation on this path. Ends once, in :meth:`_finish`: the upstream response ended
    (:meth:`on_end`), or the client left (:meth:`client_lost`).
    """

    __slots__ = ("router", "f", "d", "conn", "first", "context", "inject_usage", "client", "splitter",
                 "clock", "last_t", "usage_tokens", "content_events", "grown", "ok", "err", "finished", "held",
                 "lost_reason")

    def __init__(self, router: RelayOwner, f: Flight, d: InstanceState, conn: UpstreamConnection, first: bytes,
                 context: int, inject_usage: bool) -> None:
        self.router, self.f, self.d, self.conn, self.first = router, f, d, conn, first
        self.context, self.inject_usage = context, inject_usage
        self.client: ClientConnection | None = None
        self.splitter = EventSplitter()
        self.clock = router.state.clock  # RouterState.now without the extra call, once per read
        self.last_t: float | None = None
        self.usage_tokens: int | None = None
        self.content_events = 0
        self.grown = 0
        self.ok = False
        self.err = ""
        self.finished = False
        self.held = b""  # events of the read that also ended the response
        self.lost_reason = "client disconnected"

    def start(self, client: ClientConnection) -> None:
        self.client = client
        if client.closed:
            self.client_lost("client disconnected")
            return
        client.start_stream(self, xid_header(self.f.x_request_id))
        first, self.first = self.first, b""
        self.on_body(first)
        if not self.finished:
            self.router._streaming[self.d.instance_id].add(self)
            self.conn.attach(self)

    # ---- upstream side ----------------------------------------------------------------------
    def on_body(self, data: bytes) -> None:
        """One socket read: account for its complete events and forward them in one write.

        Runs once per token (vLLM sends each token as it is made), so it is kept lean: the
        events are forwarded as the bytes they arrived in (``EventSplitter.split`` keeps the
        ``\\n\\n`` framing), and only an event that must not reach the client (the usage chunk
        the router asked for itself) makes it rebuild the output."""
        sp = self.splitter
        if sp.tail:
            data = sp.tail + data
        if SSE_SEP not in data:
            sp.tail = data
            return
        events = data.split(SSE_SEP)
        tail = sp.tail = events.pop()
        if self.client is None:
            return
        dropped: list[int] | None = None
        now = 0.0
        for k, event in enumerate(events):
            if event[:6] != b"data: ":
                continue
            payload = event[6:]
            if payload == b"[DONE]":
                self.ok = not self.err
                continue
            if not now:
                now = self.clock()
            if not self._scan(payload, now):  # the injected usage chunk the client did not ask for
                if dropped is None:
                    dropped = []
                dropped.append(k)
        if dropped is None:
            out = data[:len(data) - len(tail)] if tail else data  # the events, each with its \\n\\n
        else:
            out = b"".join(e + SSE_SEP for k, e in enumerate(events) if k not in dropped)
        if out:
            if self.conn.complete:  # the response ends in this read: on_end writes it with the end
                self.held += out
            else:
                self.client.write_chunk(out)

    def _scan(self, payload: bytes, now: float) -> bool:
        """Account for one event (tokens, ITL, usage, errors); False: do not forward it."""
        try:
            obj = _loads(payload)
        except orjson.JSONDecodeError:
            return True
        if type(obj) is not dict:  # orjson builds plain dicts and lists only
            return True
        forward = True
        usage = obj.get("usage")
        if usage and type(usage) is dict:
            n_usage = usage.get("completion_tokens")
            if type(n_usage) is int and n_usage >= 0:  # a malformed count is not trusted (nor fatal)
                self.usage_tokens = n_usage
        choices = obj.get("choices")
        if choices and type(choices) is list and type(choices[0]) is dict:
            # Tokens in the chunk (_chunk_tokens, inlined: this runs once per streamed token).
            choice = choices[0]
            ids = choice.get("token_ids")
            if ids and type(ids) is list:
                n_tok = len(ids)
            elif choice.get("text"):
                n_tok = 1
            else:
                delta = choice.get("delta")
                n_tok = 1 if type(delta) is dict and (delta.get("content") or delta.get("reasoning_content")) else 0
            f = self.f
            if f.first_token_s != f.first_token_s:  # NaN: this is the first token
                f.first_token_s, f.ttft_source = now, "stream"
                self.router.metrics.decode_first.observe(now - f.decode_start_s)
            elif n_tok and self.last_t is not None:
                d = self.d
                d.itl_sum_s += now - self.last_t
                d.itl_count += n_tok
            if n_tok:
                d = self.d
                self.last_t = now
                self.content_events += n_tok
                d.decode_tokens_out += n_tok
                d.decode_tokens += n_tok  # RouterState.grow_decode, inlined (per event)
                self.grown += n_tok
        elif self.inject_usage and usage is not None:
            forward = False  # the client did not ask for the usage chunk
        if "error" in obj:
            self.err = short(obj["error"]) or "the instance sent an empty error"
        return forward

    def on_end(self, exc: UpstreamError | None) -> None:
        client = self.client
        last, self.held = self.held, b""
        if exc is None:
            tail = self.splitter.tail
            if tail.strip():
                last += tail
            if not self.ok and not self.err:
                self.err = "upstream stream ended without [DONE]"
        else:
            self.err = f"decode instance {self.d.instance_id} failed mid-stream ({exc_name(exc)})"
            if isinstance(exc, UpstreamTimeout):
                self.router.state.mark_unhealthy(self.d, self.err)  # silent for stream_idle_timeout_s: stalled
            else:
                self.router._probe(self.d)  # one broken stream; the health check tells a dead engine apart
            self.ok = False
            last += b"data: " + orjson.dumps(error_body(502, self.err)) + b"\n\ndata: [DONE]\n\n"
        if client is None or not self.ok:
            self._finish()
            if client is not None:
                client.end_stream(last)
            return
        # The journal's 200 means the client took the stream: the instance's side ends now (the
        # decode slot and the connection are free at once), the record waits until the end has
        # left the router's buffer (or the client went away, or write_timeout_s dropped it).
        self._finish(record=False)
        client.end_stream(last, watch=self._delivered)

    def _delivered(self, delivered: bool, reason: str) -> None:
        if not delivered:
            self.ok = False
            self.lost_reason = f"{reason} before the end of the stream left the router"
        self._record()

    # ---- client side ------------------------------------------------------------------------
    def client_lost(self, reason: str = "client disconnected") -> None:
        if self.finished:
            return
        self.lost_reason = reason
        self.conn.sink = None  # its end is this one: no probe, no error event
        self.conn.close()  # closing the upstream stream aborts the request on the instance
        self._finish()

    def client_paused(self) -> None:
        self.conn.pause()

    def client_resumed(self) -> None:
        self.conn.resume()

    def _finish(self, record: bool = True) -> None:
        if self.finished:
            return
        self.finished = True
        r, f = self.router, self.f
        r._streaming[self.d.instance_id].discard(self)
        st = r.state
        st.end_decode(self.d, self.context + self.grown)
        f.finish_s = st.now()
        f.output_tokens = int(self.usage_tokens if self.usage_tokens is not None else self.content_events)
        if self.ok:
            self.conn.release()  # the connection goes back to the pool
        else:
            self.conn.close()
        if record:
            self._record()

    def _record(self) -> None:
        r, f = self.router, self.f
        if self.err:
            f.status, f.error = 502, self.err
            r._record(f, rejected=True)
        elif not self.ok:
            f.status, f.error = 499, self.lost_reason
            r._record(f, rejected=True)
        else:
            r._finish_ok(f)


def exc_name(exc: UpstreamError) -> str:
    """The name a mid-stream failure's message gives a transport error (aiohttp's names for the same failures)."""
    return {UpstreamTimeout: "TimeoutError", UpstreamClosed: "ServerDisconnectedError"}.get(type(exc), type(exc).__name__)


def _chunk_tokens(choice: dict) -> int:
    """Tokens in one streamed choice: its token ids when returned, else 1 per non-empty text or
    content delta (vLLM streams one token per chunk); 0 for a role-only or finish-only chunk."""
    ids = choice.get("token_ids")
    if ids and isinstance(ids, list):
        return len(ids)
    if choice.get("text"):
        return 1
    delta = choice.get("delta")
    return 1 if isinstance(delta, dict) and (delta.get("content") or delta.get("reasoning_content")) else 0


DECISIVE: Any = object()  # first_decisive_event: the stream may go to the client


def first_decisive_event(buf: bytes) -> Any:
    """Scan the complete SSE events in ``buf``: ``None`` if none is decisive yet (only role-only
    chunks so far), the error object if an error comes before any token, else ``DECISIVE``."""
    for event in buf.split(b"\n\n")[:-1]:
        if not event.startswith(b"data: "):
            continue
        data = event[6:]
        if data == b"[DONE]":
            return DECISIVE
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return DECISIVE  # not ours to judge: relay it
        if not isinstance(obj, dict):
            return DECISIVE
        if "error" in obj:
            return obj["error"] if obj["error"] is not None else {"message": "error"}
        choices = obj.get("choices")
        first = choices[0] if type(choices) is list and choices else None
        if type(first) is not dict:  # not vLLM's shape: no token to wait for
            first = {}
        if obj.get("usage") or _chunk_tokens(first) or first.get("finish_reason"):
            return DECISIVE
    return None
