"""The router's HTTP/1.1 server: the data path on raw asyncio, everything else on its ASGI app.

``POST /v1/completions`` and ``POST /v1/chat/completions`` are parsed here (``httptools``) and
handed to :meth:`Router.handle_client` with a :class:`ClientConnection` to answer on: a whole
response in one write, or a chunked SSE stream that the relay writes to straight from the
upstream connection's ``data_received``. Any other request (admin API, ``/metrics``, ``/health``,
``/v1/models``) goes to ``Router.app``, the Starlette app, through a minimal ASGI bridge (the body
in one message, the response buffered: none of those endpoints streams). The data path skips
ASGI because its per-message cost (a scope, a ``send`` coroutine per chunk, a task wake-up per
upstream read) was most of the router's CPU per request (benchmarks/router_overhead.py).

Keep-alive and pipelining: requests on one connection are answered in order, one at a time
(reading pauses while one is in flight). Limits: a body over ``max_body_bytes`` gets a 413 and the
connection closes (the rest of the body is never read); unparseable HTTP gets a 400 and a close.
A client that stops reading pauses the upstream stream it is fed from (bounded memory), and is
disconnected once it has read nothing for ``write_timeout_s`` while the router has output queued
for it (its legs end with it). A client that disconnects while its request waits for a leg
cancels the request (the router closes the leg, which aborts it on the instance). At most
``max_client_connections`` connections are open at once; one more is answered 503 and closed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import gc
import logging
import signal
import socket
import threading
import time
from http import HTTPStatus
from typing import Any, Awaitable, Callable, Protocol

import httptools
import orjson

from arrow_rl.cluster.live.validation import error_body
from arrow_rl.serving.config import RouterConfig

log = logging.getLogger(__name__)

DATA_PATHS = {b"/v1/completions": False, b"/v1/chat/completions": True}  # path -> chat
# Request line and headers together, at most (a request with more gets a 431 and a close); the
# body has its own limit, RouterConfig.max_body_bytes.
MAX_HEAD_BYTES = 64 * 1024
_PHRASES = {s.value: s.phrase.encode() for s in HTTPStatus}
_SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
_date = [0, b""]  # [second, b"date: ...\r\n"]: formatted once a second


def _date_header() -> bytes:
    now = int(time.time())
    if now != _date[0]:
        _date[0], _date[1] = now, b"date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
    return _date[1]


class StreamHandler(Protocol):
    """What a :class:`ClientConnection` tells the response stream it is writing."""

    def client_lost(self, reason: str = "client disconnected") -> None: ...

    def client_paused(self) -> None: ...

    def client_resumed(self) -> None: ...


class ServedRouter(Protocol):
    """What the server needs of the router it serves (``arrow_rl.serving.router.Router``): the
    server only parses and writes HTTP, the router decides every answer."""

    config: RouterConfig
    app: Callable[..., Awaitable[None]]   # the ASGI app for every path but the data path

    async def handle_client(self, conn: "ClientConnection", req: "ClientRequest", chat: bool) -> None: ...

    async def startup(self) -> None: ...

    async def shutdown(self) -> None: ...


class ClientRequest:
    __slots__ = ("method", "path", "query", "headers", "body", "http_11", "keep_alive")

    def __init__(self, method: bytes, path: bytes, query: bytes, headers: list[tuple[bytes, bytes]],
                 body: bytes, http_11: bool, keep_alive: bool) -> None:
        self.method, self.path, self.query, self.headers = method, path, query, headers
        self.body, self.http_11, self.keep_alive = body, http_11, keep_alive

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


def response_head(status: int, content_type: bytes, length: int, extra: bytes = b"", close: bool = False) -> bytes:
    return (b"HTTP/1.1 " + str(status).encode() + b" " + _PHRASES.get(status, b"Unknown") + b"\r\n" + _date_header()
            + b"content-type: " + content_type + b"\r\ncontent-length: " + str(length).encode() + b"\r\n" + extra
            + (b"connection: close\r\n\r\n" if close else b"\r\n"))


class ClientConnection(asyncio.Protocol):
    """One client connection: parse requests, dispatch them in order, write their answers."""

    def __init__(self, server: "FrontServer") -> None:
        self.server = server
        self.router = server.router
        self.max_body = server.router.config.max_body_bytes
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: collections.deque[ClientRequest] = collections.deque()
        self.busy = False
        self.closed = False
        self.stream: StreamHandler | None = None  # the SSE relay writing to this connection
        self.chunked = True
        self.head = b""  # an SSE response head not yet written
        self.close_after = False
        self.paused = False
        self.lost: asyncio.Future | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._refused = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self.write_timed_out = False
        self.data_task: asyncio.Task | None = None  # the completions request being served (cancellable)
        # Told once whether a finished stream's last bytes left the router's buffer (True) or the
        # client went away first (False): the journal records what the client received.
        self.drain_watch: list[Any] = []

    # ---- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop sets TCP_NODELAY itself)
        cap = self.router.config.max_client_connections
        if len(self.server.connections) >= cap:
            self.server.refused += 1
            self._refuse(503, f"the router has {cap} open client connections (max_client_connections); retry later")
            return
        self.server.connections.add(self)
        sndbuf = self.router.config.client_sndbuf_bytes
        sock = transport.get_extra_info("socket")
        if sndbuf and sock is not None:
            # A bounded kernel send buffer: what a client has not read stays in the router's own
            # buffer, where the write timeout sees it (and the journal knows it was not delivered).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self._arm_idle(self.router.config.client_first_request_s)

    def _arm_idle(self, after_s: float | None = None) -> None:
        """Close the connection if no request starts within ``after_s`` (default: between requests,
        ``client_keepalive_s``). A close while the client is sending resets its request (the kernel
        answers the late bytes with RST), so a fresh connection gets the longer
        ``client_first_request_s``."""
        delay = self.router.config.client_keepalive_s if after_s is None else after_s
        self._idle_timer = asyncio.get_running_loop().call_later(delay, self._idle_close)

    def _idle_close(self) -> None:
        self._idle_timer = None
        if not self.busy and not self.queue and self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self._refused:
                self._refuse(400, f"malformed HTTP request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for timer in (self._idle_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._write_timer = None
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        reason = (f"client read nothing for {self.router.config.write_timeout_s:g}s (write_timeout_s)"
                  if self.write_timed_out else "client disconnected")
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.client_lost(reason)
        elif self.data_task is not None and not self.data_task.done():
            self.data_task.cancel()   # waiting for a leg: the router closes it and journals 499
        watches, self.drain_watch = self.drain_watch, []
        for watch in watches:
            watch(False, reason)

    def pause_writing(self) -> None:
        self.paused = True
        if self._write_timer is None:
            self._write_timer = asyncio.get_running_loop().call_later(self.router.config.write_timeout_s,
                                                                      self._write_timeout)
        if self.stream is not None:
            self.stream.client_paused()

    def resume_writing(self) -> None:
        self.paused = False
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        if self.stream is not None:
            self.stream.client_resumed()
        watches, self.drain_watch = self.drain_watch, []
        for watch in watches:
            watch(True, "")

    def _write_timeout(self) -> None:
        """The client has not read for ``write_timeout_s`` while output waits for it: drop it (the
        queued bytes with it) so it holds no decode slot and no memory any longer."""
        self._write_timer = None
        if self.paused and self.transport is not None and not self.closed:
            self.write_timed_out = True
            self.server.write_timeouts += 1
            self.transport.abort()

    # ---- httptools callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size = b"", [], [], 0
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._size += len(url)
        if self._size > MAX_HEAD_BYTES:
            self._refuse(431, f"request line and headers exceed {MAX_HEAD_BYTES} bytes")
            raise httptools.HttpParserError("head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))
        self._size += len(name) + len(value)
        if self._size > MAX_HEAD_BYTES:
            self._refuse(431, f"request line and headers exceed {MAX_HEAD_BYTES} bytes")
            raise httptools.HttpParserError("head too large")

    def on_headers_complete(self) -> None:
        self._size = 0  # from here on: the body's size
        for k, v in self._headers:
            if k == b"content-length" and v.isdigit() and int(v) > self.max_body:
                self._refuse(413, f"request body is {v.decode()} bytes; the router accepts at most "
                                  f"{self.max_body} (max_body_bytes)")
                raise httptools.HttpParserError("body too large")  # stop parsing this connection
            if k == b"expect" and v.lower() == b"100-continue" and self.transport is not None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.max_body:
            self._refuse(413, f"request body exceeds {self.max_body} bytes (max_body_bytes)")
            raise httptools.HttpParserError("body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        url = self._url
        path, _, query = url.partition(b"?")
        p = self.parser
        req = ClientRequest(p.get_method(), path, query, self._headers,
                            self._body[0] if len(self._body) == 1 else b"".join(self._body),
                            p.get_http_version() == "1.1", p.should_keep_alive())
        self.queue.append(req)
        if not self.busy:
            self._dispatch()
        elif len(self.queue) > 1 and self.transport is not None:
            self.transport.pause_reading()  # pipelined: hold further requests in the socket

    # ---- dispatch -----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        if not self.queue or self.closed:
            return
        req = self.queue.popleft()
        self.busy = True
        self.close_after = not req.keep_alive
        self.chunked = req.http_11
        chat = DATA_PATHS.get(req.path)
        loop = asyncio.get_running_loop()
        if chat is None:
            task = loop.create_task(self._asgi(req))
        elif req.method != b"POST":
            self.reply(405, b'{"detail":"Method Not Allowed"}', extra=b"allow: POST\r\n")
            return
        else:
            task = self.data_task = loop.create_task(self.router.handle_client(self, req, chat))
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        if task is self.data_task:
            self.data_task = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("router: unhandled error", exc_info=exc)
            if self.busy and self.stream is None:
                self.reply(500, orjson.dumps(error_body(500, f"internal router error ({type(exc).__name__})")),
                           close=True)

    def _done(self) -> None:
        """The current response is complete: next request, or close."""
        self.busy = False
        self.stream = None
        self.head = b""
        if self.closed:
            return
        if self.close_after:
            assert self.transport is not None
            self.transport.close()
            return
        if self.queue:
            self._dispatch()
        elif self.transport is not None:
            self.transport.resume_reading()
            self._arm_idle()

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request that cannot be parsed or accepted, then close the connection."""
        self._refused = True
        if self.transport is None or self.closed:
            return
        body = orjson.dumps(error_body(status, message))
        if not self.busy:  # never interleave with a response in flight
            self.transport.write(response_head(status, b"application/json", len(body), close=True) + body)
        self.transport.close()

    # ---- responses ----------------------------------------------------------------------------
    def reply(self, status: int, body: bytes, content_type: bytes = b"application/json", extra: bytes = b"",
              close: bool = False, watch: Any = None) -> None:
        """A whole response in one write; ``extra`` is preformatted header lines. ``watch``: as
        for :meth:`end_stream` (told whether the response left the router's buffer)."""
        if close:
            self.close_after = True
        if not self.closed and self.transport is not None:
            self.transport.write(response_head(status, content_type, len(body), extra, self.close_after) + body)
        self._watch(watch)
        self._done()

    def _watch(self, watch: Any) -> None:
        if watch is None:
            return
        if self.closed:
            watch(False, "client disconnected")
        elif self.paused:
            self.drain_watch.append(watch)   # (several, when pipelined responses end while paused)
        else:
            watch(True, "")

    def start_stream(self, handler: StreamHandler, extra: bytes = b"") -> None:
        """Begin an SSE response; ``handler`` hears of a lost or slow client. The head goes out
        with the first chunk (one write, not two)."""
        self.stream = handler
        if self.chunked:
            self.head = _SSE_HEAD + _date_header() + extra + b"transfer-encoding: chunked\r\n\r\n"
        else:  # HTTP/1.0: the body ends when the connection closes
            self.close_after = True
            self.head = _SSE_HEAD + _date_header() + extra + b"connection: close\r\n\r\n"
        if self.paused:
            handler.client_paused()

    def write_chunk(self, data: bytes) -> None:
        if self.closed or not data:
            return
        assert self.transport is not None
        if self.chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        if self.head:
            data, self.head = self.head + data, b""
        self.transport.write(data)

    def end_stream(self, data: bytes = b"", watch: Any = None) -> None:
        """The last chunk (if any) and the end of the stream, in one write. ``watch(delivered,
        reason)``: called at once if the client has taken everything but what fits the transport's
        buffer, else when it resumes reading (True) or goes away first (False)."""
        if not self.closed and self.transport is not None:
            if self.chunked:
                data = (b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data)) if data else b"0\r\n\r\n"
            self.transport.write(self.head + data)
            self.head = b""
        self._watch(watch)
        self._done()

    # ---- everything else: the Starlette app ---------------------------------------------------
    async def _asgi(self, req: ClientRequest) -> None:
        if self.lost is None:
            self.lost = asyncio.get_running_loop().create_future()
        lost = self.lost
        sock = self.transport.get_extra_info("sockname") if self.transport else None
        peer = self.transport.get_extra_info("peername") if self.transport else None
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                 "http_version": "1.1" if req.http_11 else "1.0", "method": req.method.decode("latin-1"),
                 "scheme": "http", "path": req.path.decode("latin-1"), "raw_path": req.path,
                 "query_string": req.query, "root_path": "", "headers": req.headers,
                 "server": tuple(sock[:2]) if sock else None, "client": tuple(peer[:2]) if peer else None}
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": req.body, "more_body": False}
            await asyncio.shield(lost)
            return {"type": "http.disconnect"}

        status, headers, chunks = 500, [], []

        async def send(msg: dict[str, Any]) -> None:
            nonlocal status, headers
            if msg["type"] == "http.response.start":
                status, headers = msg["status"], msg.get("headers", [])
            elif msg["type"] == "http.response.body":
                chunks.append(msg.get("body", b""))

        await self.router.app(scope, receive, send)
        body = b"".join(chunks)
        ctype = b"application/json"
        extra = b""
        for k, v in headers:
            k = k.lower()
            if k == b"content-type":
                ctype = v
            elif k == b"connection" and v.lower() == b"close":
                self.close_after = True
            elif k not in (b"content-length", b"transfer-encoding", b"connection"):
                extra += k + b": " + v + b"\r\n"
        self.reply(status, body, ctype, extra)


class FrontServer:
    """The listening socket and its connections, around one :class:`Router`."""

    def __init__(self, router: ServedRouter) -> None:
        self.router = router
        self.connections: set[ClientConnection] = set()
        self.server: asyncio.AbstractServer | None = None
        self.refused = 0          # connections refused over max_client_connections
        self.write_timeouts = 0   # clients dropped by write_timeout_s

    async def start(self, host: str, port: int, sock: socket.socket | None = None) -> None:
        """Bind (an error here leaves nothing running), start the router, then accept."""
        loop = asyncio.get_running_loop()
        if sock is not None:
            self.server = await loop.create_server(lambda: ClientConnection(self), sock=sock, backlog=2048,
                                                   start_serving=False)
        else:
            self.server = await loop.create_server(lambda: ClientConnection(self), host, port, backlog=2048,
                                                   reuse_address=True, start_serving=False)
        await self.router.startup()
        await self.server.start_serving()

    async def stop(self, grace_s: float = 1.0) -> None:
        """Stop accepting, give in-flight requests ``grace_s``, close the rest, stop the router."""
        if self.server is not None:
            self.server.close()
        t_end = time.monotonic() + grace_s
        while any(c.busy for c in self.connections) and time.monotonic() < t_end:
            await asyncio.sleep(0.02)
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.close()
        await asyncio.sleep(0)
        await self.router.shutdown()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it is, with uvicorn[standard]), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with the project's dependencies
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def raise_open_file_limit(connections: int) -> int:
    """Raise this process's soft open-file limit toward what ``connections`` clients need (each
    in-flight request also holds up to two upstream connections), never above the hard limit.
    Returns the soft limit now in force (a common default of 1024 is below the connection cap)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 3 * connections + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
    return soft


def serve(router: ServedRouter, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM (``arrow-rl serve``: this process serves nothing else)."""
    limit = raise_open_file_limit(router.config.max_client_connections)
    if 0 < limit < router.config.max_client_connections + 256:
        log.warning("open-file limit %d is low for max_client_connections=%d; connections beyond it fail to open",
                    limit, router.config.max_client_connections)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    front = FrontServer(router)

    async def main() -> None:
        stop = asyncio.Event()
        await front.start(host, port)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        # The cyclic GC's full passes traverse every object the router keeps (up to max_records
        # records and event_log_size events): freeze what exists at start-up and collect the
        # young generation less often. Per-request objects are acyclic, freed by refcounting.
        gc.freeze()
        gc.set_threshold(20_000, 20, 100)
        await stop.wait()
        await front.stop()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
        asyncio.set_event_loop(None)


class RouterServer:
    """Serve a :class:`Router` on 127.0.0.1 in a background thread (tests, demos); the same
    ``url``/``start``/``stop`` as the fake vLLM's ``ServerThread``."""

    def __init__(self, router: ServedRouter, port: int = 0, host: str = "127.0.0.1") -> None:
        self.router, self.host = router, host
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))  # bound now: the port is ours, no race with other processes
        self.port = self.sock.getsockname()[1]
        self.front = FrontServer(router)
        self.loop = new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self._stop = asyncio.Event()
            try:
                await self.front.start(self.host, self.port, sock=self.sock)
            except BaseException as exc:
                self._error = exc
                raise
            finally:
                self._started.set()
            await self._stop.wait()
            await self.front.stop()

        try:
            self.loop.run_until_complete(main())
        finally:
            self.loop.close()

    def start(self, timeout_s: float = 60.0) -> "RouterServer":
        self.thread.start()
        if not self._started.wait(timeout_s) or self._error is not None:
            raise RuntimeError(f"router on port {self.port} did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._stop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout=5)

    def __enter__(self) -> "RouterServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
