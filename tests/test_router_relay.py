"""The router's SSE relay and upstream HTTP parsing, fed byte streams split anywhere (no sockets).

Real vLLM instances stream ``data: ...\\n\\n`` events in chunked HTTP, and TCP may cut that
stream at any byte: inside a chunk header, inside an event, inside the ``\\n\\n``, or deliver
several events in one read. Whatever the cut, the client must receive exactly the events the
instance sent (less the usage chunk the router asked for on its own), and the router must count
the same tokens.
"""

from __future__ import annotations

import asyncio
import json
import math
import time

import orjson
import pytest
from fuzz import fuzz
from hypothesis import given
from hypothesis import strategies as st

from arrow_rl.cluster.base import Role
from arrow_rl.cluster.live.sse import EventSplitter
from arrow_rl.cluster.live.upstream import UpstreamClosed, UpstreamConnection, UpstreamPool
from arrow_rl.serving.config import InstanceSpec, RouterConfig
from arrow_rl.serving.flight import Flight, Reply
from arrow_rl.serving.httpserver import ClientConnection
from arrow_rl.serving.router import Router
from arrow_rl.serving.stream_relay import StreamRelay

URLS = ("http://127.0.0.1:9", "http://127.0.0.1:10")


def _event(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _stream_events(n_tokens: int, error_at: int | None = None) -> list[bytes]:
    """What vLLM streams for a completion with ``stream_options.include_usage`` set by the router."""
    out = []
    for k in range(n_tokens):
        if error_at == k:
            out.append(_event({"error": {"message": "boom", "type": "InternalServerError", "code": 500}}))
            continue
        out.append(_event({"id": "cmpl-1", "object": "text_completion", "model": "tiny",
                           "choices": [{"index": 0, "text": f" t{k}", "token_ids": [100 + k],
                                        "finish_reason": "length" if k == n_tokens - 1 else None}],
                           "usage": None}))
    out.append(_event({"id": "cmpl-1", "object": "text_completion", "model": "tiny", "choices": [],
                       "usage": {"prompt_tokens": 7, "completion_tokens": n_tokens, "total_tokens": 7 + n_tokens}}))
    out.append(b"data: [DONE]\n\n")
    return out


def _chunked_response(events: list[bytes]) -> bytes:
    """An HTTP/1.1 response as uvicorn sends it: one chunk per event, then the last chunk."""
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"
    return head + b"".join(b"%x\r\n%b\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


class _Transport:
    """A transport that records what is written and whether it was closed."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str) -> None:
        return None


def _dechunk(raw: bytes) -> bytes:
    """The body of a chunked HTTP response (head included in ``raw``)."""
    _, _, rest = raw.partition(b"\r\n\r\n")
    body = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return body
        body, rest = body + rest[:size], rest[size + 2:]


class _Rig:
    """A router, one upstream connection in stream mode and one client connection, unconnected."""

    def __init__(self) -> None:
        cfg = RouterConfig(instances=[InstanceSpec(url=URLS[0], role=Role.PREFILL),
                                      InstanceSpec(url=URLS[1], role=Role.DECODE)])
        self.router = Router(cfg)
        self.router.pool = UpstreamPool(1.0)
        self.up = _Transport()
        self.conn = UpstreamConnection(self.router.pool, self.router.pool.endpoint(URLS[1]))
        self.conn.connection_made(self.up)
        self.conn.send("/v1/completions", b"{}", "x")
        self.down = _Transport()
        server = type("FakeFront", (), {"router": self.router, "connections": set()})()
        self.client = ClientConnection(server)
        self.client.connection_made(self.down)
        self.client.busy = True
        self.flight = Flight(1, "x", time.time(), 7, 16, True, False, decode_start_s=time.time())
        self.d = self.router.state.instances[1]
        self.router.state.begin_decode(self.d, 8)

    def relay(self, first: bytes = b"") -> StreamRelay:
        r = StreamRelay(self.router, self.flight, self.d, self.conn, first, 8, inject_usage=True)
        r.start(self.client)
        return r


@pytest.fixture
def loop():
    lp = asyncio.new_event_loop()
    asyncio.set_event_loop(lp)
    yield lp
    lp.close()
    asyncio.set_event_loop(None)


def _run_split(loop: asyncio.AbstractEventLoop, wire: bytes, cuts: list[int]) -> _Rig:
    async def go() -> _Rig:
        rig = _Rig()
        rig.relay()
        prev = 0
        for c in [*cuts, len(wire)]:
            if c > prev:
                rig.conn.data_received(wire[prev:c])
            prev = c
        return rig

    return loop.run_until_complete(go())


def test_event_splitter_returns_the_same_events_whatever_the_cut():
    events = _stream_events(4)
    stream = b"".join(events)
    want = [e[:-2] for e in events]
    for cut in range(len(stream) + 1):
        sp = EventSplitter()
        got = sp.feed(stream[:cut]) + sp.feed(stream[cut:])
        assert got == want and sp.tail == b"", cut
    sp = EventSplitter()
    assert [e for b in stream for e in sp.feed(bytes([b]))] == want  # one byte per read


def test_relay_split_at_every_byte_forwards_every_event_and_counts_every_token(loop):
    events = _stream_events(5)
    wire = _chunked_response(events)
    want = b"".join(e for e in events if b'"usage":{' not in e)  # the injected usage chunk is dropped
    for cut in range(1, len(wire)):
        rig = _run_split(loop, wire, [cut])
        raw = b"".join(rig.down.written)
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), cut
        assert _dechunk(raw) == want, cut
        rec = rig.router.records[-1]
        assert not rec.rejected and rec.output_tokens == 5, cut
        assert rig.d.num_decode == 0 and rig.d.decode_tokens == 0, cut
        assert rig.conn.complete and rig.conn.keep_alive and not rig.up.closed, cut  # back to the pool
        assert not math.isnan(rig.flight.first_token_s) and rig.d.decode_tokens_out == 5, cut


def test_relay_with_every_byte_in_its_own_read_and_with_everything_in_one_read(loop):
    events = _stream_events(3)
    wire = _chunked_response(events)
    want = b"".join(e for e in events if b'"usage":{' not in e)
    for cuts in (list(range(1, len(wire))), []):
        rig = _run_split(loop, wire, cuts)
        raw = b"".join(rig.down.written)
        assert _dechunk(raw) == want
        assert rig.router.records[-1].output_tokens == 3
        if not cuts:
            assert len(rig.down.written) == 1  # head, events and the last chunk in one write


def test_held_first_events_are_forwarded_before_the_rest(loop):
    """``_open_stream`` holds the events up to the first decisive one; the relay sends them first."""
    events = _stream_events(3)
    wire = _chunked_response(events)
    head_end = wire.index(b"\r\n\r\n") + 4

    async def go() -> _Rig:
        rig = _Rig()
        rig.conn.data_received(wire[:head_end + 40])
        first = await rig.conn.read_some()
        rig.relay(first)
        rig.conn.data_received(wire[head_end + 40:])
        return rig

    rig = loop.run_until_complete(go())
    assert _dechunk(b"".join(rig.down.written)) == b"".join(e for e in events if b'"usage":{' not in e)


def test_an_error_event_mid_stream_is_forwarded_and_recorded_as_a_failure(loop):
    wire = _chunked_response(_stream_events(4, error_at=2))
    for cut in range(1, len(wire), 7):
        rig = _run_split(loop, wire, [cut])
        body = _dechunk(b"".join(rig.down.written))
        assert b'"message":"boom"' in body and body.endswith(b"data: [DONE]\n\n")
        rec = rig.router.records[-1]
        assert rec.rejected and "boom" in rec.reject_reason


def test_instance_closing_mid_stream_gives_the_client_an_error_event_and_done(loop):
    wire = _chunked_response(_stream_events(6))
    cut = wire.index(b"t3")

    probes = []

    async def go() -> _Rig:
        rig = _Rig()
        rig.router._probe = probes.append  # the health check a broken stream asks for, now
        rig.relay()
        rig.conn.data_received(wire[:cut])
        rig.conn.connection_lost(None)
        return rig

    rig = loop.run_until_complete(go())
    body = _dechunk(b"".join(rig.down.written))
    assert b"failed mid-stream" in body and body.endswith(b"data: [DONE]\n\n")
    assert rig.router.records[-1].rejected and rig.d.num_decode == 0
    assert probes == [rig.d]


def test_client_leaving_mid_stream_closes_the_upstream_and_releases_the_instance(loop):
    wire = _chunked_response(_stream_events(6))

    async def go() -> _Rig:
        rig = _Rig()
        rig.relay()
        rig.conn.data_received(wire[:wire.index(b"t2")])
        rig.client.connection_lost(None)
        rig.conn.data_received(wire[wire.index(b"t2"):])  # late bytes go nowhere
        return rig

    rig = loop.run_until_complete(go())
    assert rig.up.closed  # closing the upstream aborts the request on the instance
    rec = rig.router.records[-1]
    assert rec.rejected and "disconnected" in rec.reject_reason
    assert rig.d.num_decode == 0 and rig.d.decode_tokens == 0
    assert len(rig.router.records) == 1


def test_json_response_split_at_every_byte(loop):
    body = orjson.dumps({"choices": [{"text": "x" * 50}], "usage": {"prompt_tokens": 3}})
    wire = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)

    async def go(cut: int) -> tuple[int, bytes]:
        pool = UpstreamPool(1.0)
        conn = UpstreamConnection(pool, pool.endpoint(URLS[0]))
        conn.connection_made(_Transport())
        conn.send("/v1/completions", b"{}", None)
        loop.call_soon(conn.data_received, wire[:cut])
        loop.call_soon(conn.data_received, wire[cut:])
        status = await conn.headers()
        return status, await conn.read_all()

    for cut in range(1, len(wire)):
        assert loop.run_until_complete(go(cut)) == (200, body), cut


def test_a_client_that_stops_reading_pauses_the_instance_stream(loop):
    """Bounded memory: the relay never buffers more than the client's transport holds."""
    wire = _chunked_response(_stream_events(6))

    async def go() -> _Rig:
        rig = _Rig()
        rig.relay()
        rig.conn.data_received(wire[:wire.index(b"t2")])
        rig.client.pause_writing()  # the client's socket buffer is full
        assert not rig.up.reading
        rig.client.resume_writing()
        assert rig.up.reading
        rig.client.pause_writing()
        rig.conn.data_received(wire[wire.index(b"t2"):])  # what was in flight still goes through
        # the instance's side is done (slot and connection free), but the client has not taken the
        # end yet: the journal waits for it
        assert rig.d.num_decode == 0 and not rig.router.records
        rig.client.resume_writing()
        return rig

    rig = loop.run_until_complete(go())
    assert rig.router.records[-1].output_tokens == 6 and not rig.router.records[-1].rejected
    assert rig.up.reading and not rig.up.closed  # released to the pool, reading again


def test_a_stream_whose_end_the_client_never_takes_is_journaled_499(loop):
    """The journal records what the client received: a stream that ended upstream while the client
    had stopped reading, and whose client then went away, is not a 200."""
    wire = _chunked_response(_stream_events(6))

    async def go() -> _Rig:
        rig = _Rig()
        rig.relay()
        rig.client.pause_writing()
        rig.conn.data_received(wire)
        assert rig.d.num_decode == 0 and not rig.router.records
        rig.client.connection_lost(None)
        return rig

    rig = loop.run_until_complete(go())
    rec = rig.router.records[-1]
    assert rec.rejected and "before the end of the stream left the router" in rec.reject_reason
    assert len(rig.router.records) == 1


def _stale_server(loop):
    """A real socket server: answers the first request on each connection with a keep-alive 200,
    and closes a connection that sends a second request without answering it (a keep-alive
    connection the instance dropped as we reused it)."""
    body = orjson.dumps({"ok": True})
    wire = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
    seen = {"connections": 0}

    async def handle(reader, writer):
        seen["connections"] += 1
        served = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0].split(b":")[1])
            await reader.readexactly(length)
            if served:
                writer.close()
                return
            writer.write(wire)
            await writer.drain()
            served += 1

    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen


def test_a_pooled_connection_the_instance_dropped_is_retried_once_on_a_fresh_one(loop):
    server, url, seen = _stale_server(loop)

    async def go():
        pool = UpstreamPool(1.0)
        answers = []
        for _ in range(3):
            conn, status = await pool.open(url, "/v1/completions", b"{}", None, total_s=5)
            answers.append((status, await conn.read_all()))
            conn.release()
        return answers, pool.connects

    answers, connects = loop.run_until_complete(go())
    assert answers == [(200, b'{"ok":true}')] * 3
    assert connects == 3 and seen["connections"] == 3   # each reuse was dropped, each retried fresh
    server.close()


def test_a_fresh_connection_that_closes_is_not_retried(loop):
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    async def go():
        pool = UpstreamPool(1.0)
        with pytest.raises(UpstreamClosed):
            await pool.open(url, "/v1/completions", b"{}", None, total_s=5)
        return pool.connects

    assert loop.run_until_complete(go()) == 1
    server.close()


# ---- any JSON an instance streams: counted as specified, never an exception in the relay ----------

def _accounting(loop: asyncio.AbstractEventLoop, payloads: list[bytes]) -> tuple:
    """Relay a first token then ``payloads`` (the response left open): what the relay counted and forwarded."""
    first = _event({"id": "c", "choices": [{"index": 0, "text": "a"}], "usage": None})
    events = [first, *(b"data: " + p + b"\n\n" for p in payloads)]
    wire = _chunked_response(events)
    open_end = len(wire) - len(b"0\r\n\r\n")   # no end of response: no record, nothing reset

    async def go() -> tuple[_Rig, StreamRelay]:
        rig = _Rig()
        relay = rig.relay()
        rig.conn.data_received(wire[:open_end])
        return rig, relay

    rig, r = loop.run_until_complete(go())
    return r.content_events, r.usage_tokens, r.err, _dechunk(b"".join(rig.down.written) + b"0\r\n\r\n")


def _spec_tokens(obj) -> int:
    """The relay's token rule, written out: choices[0]'s token ids if a non-empty list, else 1 for a
    non-empty text or a content / reasoning delta, else 0."""
    if type(obj) is not dict or type(obj.get("choices")) is not list or not obj["choices"]:
        return 0
    ch = obj["choices"][0]
    if type(ch) is not dict:
        return 0
    if type(ch.get("token_ids")) is list and ch["token_ids"]:
        return len(ch["token_ids"])
    if ch.get("text"):
        return 1
    delta = ch.get("delta")
    return 1 if type(delta) is dict and (delta.get("content") or delta.get("reasoning_content")) else 0


_json_value = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                               st.sampled_from(["text", "content", "usage", "error", "token_ids", "delta",
                                                "reasoning_content", "completion_tokens", "x"]), inner, max_size=4),
                           max_leaves=12)


@fuzz(200)
@given(obj=st.fixed_dictionaries({"choices": st.lists(st.dictionaries(
    st.sampled_from(["text", "delta", "token_ids", "index"]), _json_value, max_size=3), max_size=2)},
    optional={"usage": _json_value, "error": _json_value}), compact=st.booleans())
def test_any_chunk_is_counted_by_the_rule_and_never_breaks_the_relay(loop, obj, compact):
    # found by this test: "token_ids": true raised TypeError inside data_received
    payload = orjson.dumps(obj) if compact else json.dumps(obj).encode()
    events, usage, err, out = _accounting(loop, [payload])
    assert events == 1 + _spec_tokens(obj)
    usage_in = obj.get("usage")
    n = usage_in.get("completion_tokens") if type(usage_in) is dict else None
    assert usage == (n if type(n) is int and n >= 0 else None)
    assert bool(err) == ("error" in obj)
    dropped = not _spec_tokens(obj) and type(obj["choices"]) is list and not obj["choices"] and usage_in is not None
    assert out.endswith(b"data: " + payload + b"\n\n") != dropped   # only the injected usage chunk is held back


@fuzz(200)
@given(obj=st.dictionaries(st.sampled_from(["choices", "usage", "error", "x"]),
                           _json_value | st.lists(_json_value, max_size=2), max_size=3))
def test_the_first_decisive_event_judges_any_json_without_raising(obj):
    # choices as a string or a list of non-objects raised AttributeError before the first token
    from arrow_rl.serving.stream_relay import DECISIVE, first_decisive_event

    out = first_decisive_event(b"data: " + orjson.dumps(obj) + b"\n\n")
    if "error" in obj:
        assert out is not None and out is not DECISIVE
    else:
        assert out is None or out is DECISIVE


@pytest.mark.parametrize("client_reads", [True, False])
def test_a_whole_response_is_journaled_when_it_leaves_the_router_or_as_499_if_the_client_leaves_first(
        loop, client_reads):
    async def go() -> _Rig:
        rig = _Rig()
        f = rig.flight
        f.stream, f.status = False, 0
        rig.client.pause_writing()   # the client is not reading: the response stays in the router's buffer
        reply = Reply(200, b'{"ok": true}', flight=f)
        rig.client.reply(reply.status, reply.body,
                         watch=lambda ok, why: rig.router._reply_sent(f, ok, why))
        assert not rig.router.records
        if client_reads:
            rig.client.resume_writing()
        else:
            rig.client.connection_lost(None)
        return rig

    rig = loop.run_until_complete(go())
    rec = rig.router.records[-1]
    if client_reads:
        assert not rec.rejected
    else:
        assert rec.rejected and rec.reject_reason == "client disconnected before the response left the router"
    assert len(rig.router.records) == 1
