"""The router's HTTP/1.1 client to its instances: pooled keep-alive connections, no per-chunk tasks.

Each upstream connection is an ``asyncio.Protocol`` with an ``httptools`` response parser. A leg
writes its whole request in one ``transport.write`` and then either awaits the full body (the
prefill leg, non-streaming requests, error answers) or reads the first chunks of a stream itself
and then hands the connection a *sink*: from then on the body is delivered straight from
``data_received`` to the sink, synchronously, everything one socket read carried at once. That is
what keeps the relay at a few microseconds per read where an ``async for`` over a client library's
stream costs a task wake-up, a future and a generator step per chunk.

Failures are exceptions the router maps onto its health rules: :class:`UpstreamConnectError`
(refused/unreachable), :class:`UpstreamTimeout` (connect, whole-request or idle-stream timeout),
:class:`UpstreamClosed` (the instance closed the connection before the response ended) and
:class:`UpstreamAborted` (the router gave up on the leg itself: its instance was marked unhealthy
while the leg waited for output, so the leg is moved elsewhere).

A leg that waits for its instance's answer is registered in a ``track`` set (``UpstreamPool.open``)
until the router takes it out: that set is what the router aborts when a health check fails.

Idle connections are kept for ``keepalive_s`` (4 s by default, under the 5 s after which vLLM's
uvicorn closes an idle keep-alive connection, so a pooled connection is not reused as it closes).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Callable, Protocol
from urllib.parse import urlsplit

import httptools


class UpstreamError(Exception):
    """An instance gave no complete HTTP answer."""


class UpstreamConnectError(UpstreamError):
    """The connection could not be made (refused, unreachable, DNS)."""


class UpstreamTimeout(UpstreamError):
    """Connect, whole-request or idle-stream timeout."""


class UpstreamClosed(UpstreamError):
    """The instance closed the connection (or sent unparseable HTTP) before the response ended."""


class UpstreamAborted(UpstreamError):
    """The router aborted the leg (its instance left rotation while the leg had no output yet)."""


class Sink(Protocol):
    """Where a streaming body goes once :meth:`UpstreamConnection.attach` is called."""

    def on_body(self, data: bytes) -> None: ...

    def on_end(self, exc: UpstreamError | None) -> None: ...


class Endpoint:
    """One instance's address and the request-head bytes that never change."""

    def __init__(self, url: str, api_key: str | None) -> None:
        u = urlsplit(url)
        self.url = url
        self.host = u.hostname or "127.0.0.1"
        self.tls = u.scheme == "https"
        self.port = u.port or (443 if self.tls else 80)
        self.prefix = u.path.rstrip("/").encode()
        host = u.netloc.encode()
        fixed = b"Host: " + host + b"\r\nContent-Type: application/json\r\nAccept: */*\r\n"
        if api_key:
            fixed += b"Authorization: Bearer " + api_key.encode() + b"\r\n"
        self.fixed_headers = fixed


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, pool: "UpstreamPool", ep: Endpoint) -> None:
        self.pool, self.ep = pool, ep
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.reused = False   # taken from the pool (it may have been closed by the instance meanwhile)
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.complete = False
        self.keep_alive = False
        self.error: UpstreamError | None = None
        self.headers_seen = False
        self.received = False                # any response byte yet
        self.body: list[bytes] = []          # held body bytes (no sink yet)
        self.sink: Sink | None = None
        self._waiter: asyncio.Future | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle_s = 0.0
        self.last_rx = 0.0
        self.paused = False

    # ---- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_rx = self.loop.time()
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(UpstreamClosed(f"unparseable HTTP from the instance ({exc})"))
            return
        sink = self.sink
        if sink is not None:  # the relay: everything this read carried, in one call
            body = self.body
            if body:
                self.body = []
                sink.on_body(body[0] if len(body) == 1 else b"".join(body))
            if self.complete:
                self._end(None)
            return
        if self.complete:
            self._cancel_timer()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        self.fail(UpstreamClosed("the instance closed the connection before the response ended"))

    def pause_writing(self) -> None:  # our requests are small: nothing to pause
        pass

    # ---- httptools callbacks ------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_seen = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()

    # ---- requests -----------------------------------------------------------------------------
    def send(self, path: str, body: bytes, xid: str | None) -> None:
        """Write one POST (head and body in a single write)."""
        assert self.transport is not None
        self._reset()
        ep = self.ep
        head = b"POST " + ep.prefix + path.encode() + b" HTTP/1.1\r\n" + ep.fixed_headers
        if xid:
            head += b"X-Request-Id: " + xid.encode("latin-1", "replace") + b"\r\n"
        self.transport.write(head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    def set_timeout(self, total_s: float | None = None, idle_s: float | None = None) -> None:
        """Fail the request after ``total_s``, or after ``idle_s`` without a byte from the instance
        (one timer, re-armed lazily: a read costs a clock read, not a timer)."""
        self._cancel_timer()
        self.last_rx = self.loop.time()
        if total_s is not None:
            self._timer = self.loop.call_later(total_s, self.fail, UpstreamTimeout(f"no complete answer in {total_s:g}s"))
        elif idle_s is not None:
            self._idle_s = idle_s
            self._timer = self.loop.call_later(idle_s, self._idle_check)

    def _idle_check(self) -> None:
        if self.paused:  # the client is slow, not the instance: do not count it
            self.last_rx = self.loop.time()
        left = self.last_rx + self._idle_s - self.loop.time()
        if left <= 0:
            self._timer = None
            self.fail(UpstreamTimeout(f"no byte from the instance for {self._idle_s:g}s"))
        else:
            self._timer = self.loop.call_later(left, self._idle_check)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def headers(self) -> int:
        """Wait for the response's status line and headers; the status code."""
        while not self.headers_seen:
            await self._wait()
        return self.status

    async def read_all(self) -> bytes:
        """Wait for the whole response body."""
        while not self.complete:
            await self._wait()
        data, self.body = b"".join(self.body), []
        return data

    async def read_some(self) -> bytes:
        """The body bytes received so far and not yet returned (waits for at least one byte);
        ``b""`` once the response is complete."""
        while not self.body and not self.complete:
            await self._wait()
        data, self.body = b"".join(self.body), []
        return data

    def attach(self, sink: Sink) -> None:
        """From now on the body goes to ``sink`` as it arrives; the sink is told the end once."""
        self.sink = sink
        if self.body:
            data, self.body = b"".join(self.body), []
            sink.on_body(data)
        if self.error is not None:
            self._end(self.error)
        elif self.complete:
            self._end(None)

    async def _wait(self) -> None:
        if self.error is not None:
            raise self.error
        fut = self._waiter = self.loop.create_future()
        try:
            await fut
        finally:
            self._waiter = None
        if self.error is not None:
            raise self.error

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def fail(self, exc: UpstreamError) -> None:
        """Abort the request: close the connection (the instance aborts the request) and report."""
        if self.error is not None or self.complete:
            return
        self.error = exc
        self.close()
        self._wake()
        if self.sink is not None:
            self._end(exc)

    def _end(self, exc: UpstreamError | None) -> None:
        self._cancel_timer()
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.on_end(exc)

    def pause(self) -> None:
        """Stop reading (the client is not keeping up); resumes with :meth:`resume`."""
        if not self.paused and self.transport is not None and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.last_rx = self.loop.time()
            self.transport.resume_reading()

    def close(self) -> None:
        self._cancel_timer()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def release(self) -> None:
        """Done with this response: back to the pool when reusable, else closed."""
        self._cancel_timer()
        if self.paused:
            self.resume()
        if self.complete and self.keep_alive and self.error is None and not self.closed:
            self.sink = None
            self.pool.put(self)
        else:
            self.close()


class UpstreamPool:
    """Keep-alive connections per instance URL (most recently used first)."""

    def __init__(self, connect_timeout_s: float, api_key: str | None = None, keepalive_s: float = 4.0) -> None:
        self.loop = asyncio.get_running_loop()
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.api_key = api_key
        self.endpoints: dict[str, Endpoint] = {}
        self.idle: dict[str, list[UpstreamConnection]] = {}
        self.connects = 0  # connections opened so far (the rest of the legs reused one)
        self._ssl: ssl.SSLContext | None = None

    def endpoint(self, url: str) -> Endpoint:
        ep = self.endpoints.get(url)
        if ep is None:
            ep = self.endpoints[url] = Endpoint(url, self.api_key)
        return ep

    async def acquire(self, url: str) -> UpstreamConnection:
        idle = self.idle.get(url)
        if idle:
            now = self.loop.time()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < self.keepalive_s:
                    conn.reused = True
                    return conn
                conn.close()
        return await self._connect(self.endpoint(url))

    async def _connect(self, ep: Endpoint) -> UpstreamConnection:
        factory: Callable[[], UpstreamConnection] = lambda: UpstreamConnection(self, ep)  # noqa: E731
        if ep.tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await self.loop.create_connection(factory, ep.host, ep.port,
                                                            ssl=self._ssl if ep.tls else None)
        except TimeoutError:
            raise UpstreamTimeout(f"connect timed out after {self.connect_timeout_s:g}s") from None
        except OSError as exc:
            raise UpstreamConnectError(f"cannot connect to {ep.host}:{ep.port}: {exc.strerror or exc}") from None
        self.connects += 1
        return conn

    async def open(self, url: str, path: str, body: bytes, xid: str | None,
                   total_s: float | None = None, idle_s: float | None = None,
                   track: set[UpstreamConnection] | None = None) -> tuple[UpstreamConnection, int]:
        """Send one POST and wait for its status line: the connection and the status code.

        A pooled connection can be closed by the instance just as we reuse it (an idle keep-alive
        connection the server drops while our request is in flight). If a *reused* connection
        closes before a single response byte arrived, the request is sent once more on a fresh
        connection, as HTTP clients do (urllib3, httpx); any other failure is raised.

        ``track``: the connection in use is kept in this set from the moment the request is sent
        (the caller removes it once the leg has output); an error or a cancellation here takes it
        out and closes the connection (closing aborts the request on the instance)."""
        conn = await self.acquire(url)
        try:
            for attempt in (0, 1):
                if track is not None:
                    track.add(conn)
                conn.send(path, body, xid)
                conn.set_timeout(total_s=total_s, idle_s=idle_s)
                try:
                    return conn, await conn.headers()
                except UpstreamClosed:
                    if attempt or not conn.reused or conn.received:
                        raise
                if track is not None:
                    track.discard(conn)
                conn = await self._connect(self.endpoint(url))
        except BaseException:
            if track is not None:
                track.discard(conn)
            conn.close()
            raise
        raise AssertionError("unreachable")

    def put(self, conn: UpstreamConnection) -> None:
        conn.idle_since = self.loop.time()
        self.idle.setdefault(conn.ep.url, []).append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        idle = self.idle.get(conn.ep.url)
        if idle and conn in idle:
            idle.remove(conn)

    def close(self) -> None:
        for conns in self.idle.values():
            for c in conns:
                c.close()
        self.idle.clear()
