"""The live P/D router: OpenAI completions/chat to clients, vLLM's two-leg protocol to instances.

Per request (LIVE_VLLM §1.2): route the prefill leg (``RequestRouter.route_prefill``), send it
with ``max_tokens=1`` and ``do_remote_decode``; route the decode leg (``route_decode``) and send the
original body plus the returned ``kv_transfer_params``; stream the decode leg back. Both legs never
go to one instance with ``kv_transfer_params`` (NIXL rejects a self hand-off with HTTP 500): when
the decode leg lands where the prefill ran, it is sent as a plain request (vLLM's prefix cache
holds the prompt's blocks, so the prompt is not recomputed).

MIXED instances (issue 12; docs/live_cluster.md, "The MIXED pool"): ``Router.dispatcher``, the
emulator's ``MixedDispatcher`` in front of the routing policy, sends each arrival either to the
P->D path above or to one MIXED instance, which gets the client's body as one plain request and
runs prefill and decode itself (journal path ``mixed``). Without MIXED instances it only forwards.

Faults: a connection error or timeout marks the instance unhealthy (no new work until a health
check passes). A prefill leg that fails, or a decode leg that fails before any byte streamed, is
retried once as a plain request on another healthy instance; any later failure ends the client's
request with a clean error (an HTTP error, or an SSE ``error`` event then ``[DONE]`` mid-stream).

Serving (docs/live_cluster.md, "Speed"): the data path, ``POST /v1/completions`` and
``POST /v1/chat/completions``, does not go through ASGI. ``httpserver.FrontServer`` parses those
requests itself and calls :meth:`Router.handle_client`; the legs go out on ``upstream.UpstreamPool``
(raw asyncio, keep-alive), and a streamed decode leg is relayed by :class:`StreamRelay` from the
upstream connection's ``data_received`` straight to the client's transport: whatever one socket
read carried, split into whole SSE events (``sse.EventSplitter``), scanned for tokens, usage and
errors, and written in one write. Every other endpoint (admin API, ``/metrics``, ``/health``,
``/v1/models``) is ``Router.app``, a Starlette app the front server calls through a minimal ASGI
bridge. Serve with ``httpserver.serve`` (``arrow-rl serve``) or ``httpserver.RouterServer``
(a background thread: tests, demos); ``Router.app`` alone under uvicorn serves only those other
endpoints.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hmac
import itertools
import math
import secrets
import sys
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, AsyncIterator

import aiohttp
import logging
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from arrow_rl.arrow.mixed import MixedConfig, MixedDispatcher
from arrow_rl.cluster.base import RequestRecord, Role
from arrow_rl.cluster.live.config import RouterConfig
from arrow_rl.cluster.live.httpserver import ClientConnection, ClientRequest
from arrow_rl.cluster.live.metrics import BatchedHistogram
from arrow_rl.cluster.live.protocol import decode_body, max_output_tokens, plain_body, prefill_body, prompt_tokens
from arrow_rl.cluster.live.routing import LiveRoutingContext, make_live_router
from arrow_rl.cluster.live.scraper import quick_kv
from arrow_rl.cluster.live.sse import SEP as SSE_SEP, EventSplitter
from arrow_rl.cluster.live.state import FlipError, InstanceState, RouterState
from arrow_rl.cluster.live.upstream import (UpstreamAborted, UpstreamClosed, UpstreamConnectError, UpstreamConnection,
                                            UpstreamError, UpstreamPool, UpstreamTimeout)
from arrow_rl.cluster.live.validation import BadRequest, error_body, parse_json, validate_request
from arrow_rl.perf.profile import InstanceProfile
from arrow_rl.workload.workload import Request

_loads = orjson.loads
log = logging.getLogger(__name__)

# Used only when no measured profile exists (arrow routing without `arrow-rl live-profile`):
# ordering-only defaults, documented in docs/live_cluster.md.
FALLBACK_PROFILE = InstanceProfile(prefill_a=0.0, prefill_b=1e-4, prefill_c=0.02,
                                   decode_slope=1e-7, decode_intercept=0.01)


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
_FLIGHT_TIMES = tuple(k for k, t in Flight.__annotations__.items() if t == "float")

KV_READ_EVERY_S = 1.0   # the health loop reads an instance's KV usage from /metrics at most this often
MAX_XID = 200   # a client's X-Request-Id is kept (journal, logs, upstream) up to this many bytes

_ROLE_GAUGE = {Role.PREFILL: 1, Role.DECODE: 0, Role.MIXED: 2}   # arrow_router_instance_role

# Admin ids are JSON integers only: "1", 1.0 and true are refused, not coerced.
InstanceId = Annotated[int, Strict()]
# A load signal is a finite number (Alg. 2's LP/LD); NaN/Infinity would poison Alg. 1's comparisons.
Load = Annotated[float, Strict(), Field(allow_inf_nan=False, ge=0.0)]


class FlipBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: InstanceId
    role: Role


# A flip's source becomes a Prometheus label value: short, plain characters (the set of distinct
# values is bounded separately, RouterConfig.max_flip_sources).
SOURCE_RE = r"^[A-Za-z0-9_.:@/+-]{1,64}$"


class RolesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: InstanceId | None = None
    role: Role | None = None
    flips: list[FlipBody] | None = None
    source: Annotated[str, Field(pattern=SOURCE_RE)] = "admin"


class RoutingBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: str | None = None
    mixed: dict[str, Any] | None = None   # a MixedConfig: the split policy of the MIXED pool


class SignalsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decode_load: Load | None = None
    prefill_load: Load | None = None


class Router:
    """State, the data path (:meth:`handle_client`) and the Starlette app for everything else
    (``app``). Serve with ``httpserver.serve(router, host, port)`` or ``httpserver.RouterServer``."""

    def __init__(self, config: RouterConfig, token: str | None = None,
                 profiles: dict[int, InstanceProfile] | None = None) -> None:
        self.config = config
        self.token = token or secrets.token_urlsafe(24)
        self.state = RouterState([i.url for i in config.instances], [i.role for i in config.instances],
                                 event_log_size=config.event_log_size, flip_log_size=config.max_flips)
        self.profiles: dict[int, InstanceProfile] = dict(profiles or {})
        self.slo = config.slo
        self.client: aiohttp.ClientSession | None = None
        self.pool: UpstreamPool | None = None
        # Request ids the router makes up: unique per process (random prefix) and cheap (a counter).
        self._xid_prefix = uuid.uuid4().hex[:16]
        self._health_tasks: list[asyncio.Task] = []
        self._probes: set[asyncio.Task] = set()
        # Per instance: connections of legs sent there that have produced no output yet. When the
        # instance leaves rotation they are aborted and their requests retried elsewhere at once.
        self._waiting: list[set[UpstreamConnection]] = [set() for _ in self.state.instances]
        # Per instance: decode streams being relayed from it (a silent one ends when it leaves rotation).
        self._streaming: list[set[StreamRelay]] = [set() for _ in self.state.instances]
        self.state.on_unhealthy = self._instance_down
        self._kv_read_at: list[float] = [-math.inf for _ in self.state.instances]
        self._flip_sources: set[str] = set()
        self._journal = open(config.journal, "ab") if config.journal else None
        self._journal_lines: list[bytes] = []
        self._flush_task: asyncio.Task | None = None
        # Bounded (RouterConfig.max_records): the newest completed requests; ``completed`` counts all.
        self.records: collections.deque[RequestRecord] = collections.deque(maxlen=config.max_records)
        self.completed = 0
        # What the instances serve (their /v1/models), learned by the health loop: the router then
        # refuses an unknown model (404) and a max_tokens beyond the context (400) itself.
        self.models: frozenset[str] | None = None
        self.max_model_len: int | None = config.max_model_len
        self.mixed_config: MixedConfig = config.mixed
        self.set_routing(config.routing)
        self._build_metrics()
        self.app = Starlette(routes=[
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/health", self._health, methods=["GET"]),
            Route("/metrics", self._metrics, methods=["GET"]),
            Route("/state", self._get_state, methods=["GET"]),
            Route("/roles", self._post_roles, methods=["POST"]),
            Route("/roles", self._get_roles, methods=["GET"]),
            Route("/routing", self._post_routing, methods=["POST"]),
            Route("/signals", self._post_signals, methods=["POST"]),
            Route("/events", self._get_events, methods=["GET"]),
        ], lifespan=self._lifespan)

    # ---- lifecycle ------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        """Open the upstream pools and start the health and journal loops (on the serving loop)."""
        # The data path's legs use UpstreamPool (raw asyncio, keep-alive; arrow_rl/cluster/live/
        # upstream.py); aiohttp serves the background GETs (health, KV poll, /v1/models).
        self.pool = UpstreamPool(self.config.connect_timeout_s, self.config.api_key)
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0)
        self.client = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                            timeout=aiohttp.ClientTimeout(total=self.config.request_timeout_s,
                                                                          connect=self.config.connect_timeout_s))
        self._health_tasks = [asyncio.create_task(self._health_loop(s)) for s in self.state.instances]
        if self._journal:
            self._flush_task = asyncio.create_task(self._journal_loop())

    async def shutdown(self) -> None:
        for task in (*self._health_tasks, self._flush_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.pool is not None:
            self.pool.close()
        if self.client is not None:
            await self.client.close()
        if self._journal:
            self._flush_journal()
            self._journal.close()

    async def _journal_loop(self) -> None:
        """Journal lines are batched and written in a worker thread, never on the request path."""
        while True:
            await asyncio.sleep(self.config.journal_flush_s)
            if self._journal_lines:
                lines, self._journal_lines = self._journal_lines, []
                await asyncio.to_thread(self._write_journal, lines)

    def _write_journal(self, lines: list[bytes]) -> None:
        assert self._journal is not None
        self._journal.write(b"".join(lines))
        self._journal.flush()

    def _flush_journal(self) -> None:
        if self._journal_lines:
            lines, self._journal_lines = self._journal_lines, []
            self._write_journal(lines)

    def set_routing(self, name: str, mixed: MixedConfig | None = None) -> None:
        """Select the per-request policy by name (and, with ``mixed``, the MIXED pool's split policy)."""
        routing = make_live_router(name, max_flips=self.config.max_flips)
        routing.reset(len(self.state.instances))
        if mixed is not None:
            self.mixed_config = mixed
        self.routing = routing
        self.ctx = LiveRoutingContext(self.state, self.slo, self.profile, on_flip=self._note_flip)

    @property
    def routing(self) -> Any:
        """The per-request policy for P/D legs (Algorithm 1, least-loaded, or one a test sets)."""
        return self._routing

    @routing.setter
    def routing(self, policy: Any) -> None:
        # The emulator's MixedDispatcher (same decision rule on both backends) sits in front of the
        # policy and decides, per arrival, between a MIXED instance and the policy's P->D path. With
        # no MIXED instance it hands every call straight to the policy (bit-identical). A new policy
        # gets a fresh dispatcher: its profile cache and counters belong to one policy.
        self._routing = policy
        self.dispatcher = MixedDispatcher(policy, self.mixed_config)

    def profile(self, instance_id: int) -> InstanceProfile:
        return self.profiles.get(instance_id, FALLBACK_PROFILE)

    def _arrow_state(self) -> Any:
        return getattr(self.routing, "state", None)

    def _note_flip(self, instance_id: int, role: Role) -> None:
        """Keep Arrow's one P→D cooldown clock (§5.5) in step with flips from any source."""
        self.m_flips.labels(source="alg1").inc()

    def _source_label(self, source: str) -> str:
        """The flip counter's label value for ``source``: itself while fewer than
        ``max_flip_sources`` distinct values exist, else ``other`` (a bounded label set)."""
        if source in self._flip_sources:
            return source
        if len(self._flip_sources) < self.config.max_flip_sources:
            self._flip_sources.add(source)
            return source
        return "other"

    # ---- metrics ----------------------------------------------------------------------------
    def _build_metrics(self) -> None:
        r = self.registry = CollectorRegistry()
        self.m_requests = Counter("arrow_router_requests", "Client requests by outcome", ["outcome", "path"], registry=r)
        self.m_retries = Counter("arrow_router_retries", "Legs retried as plain requests", ["leg"], registry=r)
        self.m_retries_prefill = self.m_retries.labels(leg="prefill")
        self.m_retries_decode = self.m_retries.labels(leg="decode")
        self._m_requests: dict[tuple[str, str], Any] = {}  # label children, looked up once
        self.m_flips = Counter("arrow_router_flips", "Applied role flips", ["source"], registry=r)
        lat = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
        # Observed on the request path: queued and applied in batches (live/metrics.py), always
        # before a /metrics scrape.
        self.m_ttft = BatchedHistogram(Histogram("arrow_router_ttft_seconds", "Client-visible time to first token",
                                                 buckets=lat, registry=r))
        self.m_tpot = BatchedHistogram(Histogram("arrow_router_tpot_seconds", "Time per output token after the first",
                                                 buckets=lat, registry=r))
        self.m_prefill_leg = BatchedHistogram(Histogram("arrow_router_prefill_leg_seconds", "Prefill leg latency",
                                                        buckets=lat, registry=r))
        self.m_decode_first = BatchedHistogram(Histogram(
            "arrow_router_decode_leg_first_chunk_seconds", "Decode leg: request sent to first chunk (KV pull + first step)",
            buckets=lat, registry=r))
        self._histograms = (self.m_ttft, self.m_tpot, self.m_prefill_leg, self.m_decode_first)
        self.m_role = Gauge("arrow_router_instance_role", "1 if the instance is in the prefill pool, 0 if decode, "
                            "2 if mixed", ["instance"], registry=r)
        self.m_healthy = Gauge("arrow_router_instance_healthy", "1 if healthy", ["instance"], registry=r)
        self.m_inflight = Gauge("arrow_router_instance_inflight", "In-flight legs", ["instance", "phase"], registry=r)

    def _refresh_gauges(self) -> None:
        for s in self.state.instances:
            i = str(s.instance_id)
            self.m_role.labels(i).set(_ROLE_GAUGE[s.role])
            self.m_healthy.labels(i).set(1 if s.healthy else 0)
            self.m_inflight.labels(i, "prefill").set(s.num_prefill)
            self.m_inflight.labels(i, "decode").set(s.num_decode)

    # ---- health -------------------------------------------------------------------------------
    async def _health_loop(self, s: InstanceState) -> None:
        """Check one instance every ``health_interval_s``. A failed check is repeated at once, so a
        hung instance (its ``/health`` silent) leaves rotation within ``unhealthy_after_failures``
        × ``health_timeout_s`` plus at most one interval (2 s at the defaults). One loop per
        instance: a hung instance never delays the checks of the others."""
        while True:
            ok = False
            try:
                ok = await self._check(s)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a check must never end the loop
                log.exception("health check of instance %d", s.instance_id)
            if ok or not s.healthy:
                await asyncio.sleep(self.config.health_interval_s)
            else:
                await asyncio.sleep(0)   # suspect: confirm (or clear) it now

    async def _check(self, s: InstanceState, strict: bool = False) -> bool:
        """One health check. ``strict``: a single failure marks the instance unhealthy (used right
        after an instance broke a stream, to tell a dead engine from one request's failure)."""
        assert self.client is not None
        timeout = aiohttp.ClientTimeout(total=self.config.health_timeout_s)
        try:
            async with self.client.get(s.url + "/health", timeout=timeout, headers=self._headers()) as r:
                await r.read()
                ok = r.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            ok = False
        if ok:
            s.failures = 0
            self.state.mark_healthy(s)
            if self.models is None:
                await self._learn_models(s)
            now = asyncio.get_running_loop().time()
            if now - self._kv_read_at[s.instance_id] < KV_READ_EVERY_S:
                return ok   # /metrics is heavier than /health: KV usage is read at most once a second
            self._kv_read_at[s.instance_id] = now
            with contextlib.suppress(Exception):  # KV usage is optional routing input
                async with self.client.get(s.url + "/metrics", timeout=timeout, headers=self._headers()) as m:
                    text = await m.text()
                usage, capacity = quick_kv(text)
                s.kv_usage = usage
                s.kv_capacity_tokens = capacity or s.kv_capacity_tokens
        else:
            s.failures += 1
            if strict or s.failures >= self.config.unhealthy_after_failures:
                self.state.mark_unhealthy(s, "health check failed")
        return ok

    def _instance_down(self, s: InstanceState) -> None:
        """``s`` just left rotation: abort its legs that have produced no output yet. Each raises
        ``UpstreamAborted`` where it waits and is retried on another instance at once (closing the
        connection also aborts the request on the instance, if it ever reads again)."""
        loop = self.pool.loop if self.pool is not None else None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:   # marked from another thread (tests, tools)
            loop.call_soon_threadsafe(self._instance_down, s)
            return
        waiting = self._waiting[s.instance_id]
        if waiting:
            why = UpstreamAborted(f"instance {s.instance_id} left rotation ({s.unhealthy_reason})")
            for conn in list(waiting):
                conn.fail(why)
            waiting.clear()
        # Streams that already sent tokens cannot be moved (docs/live_cluster.md, "Faults"), but one
        # that has also been silent for a health timeout is ended now, not after stream_idle_timeout_s.
        # A stream paused by its slow client is the client's, not the instance's: it stays.
        streams = self._streaming[s.instance_id]
        if not self.config.end_silent_streams or not streams or loop is None:
            return
        now = loop.time()
        quiet = self.config.health_timeout_s
        for relay in list(streams):
            conn = relay.conn
            if not conn.paused and now - conn.last_rx >= quiet:
                conn.fail(UpstreamTimeout(f"instance {s.instance_id} left rotation; its stream was silent for "
                                          f"{now - conn.last_rx:.1f}s"))

    async def _learn_models(self, s: InstanceState) -> None:
        """Served model names and context length from an instance's ``/v1/models`` (vLLM's model
        cards carry ``max_model_len``); all instances of a P/D cluster serve the same model."""
        assert self.client is not None
        with contextlib.suppress(Exception):  # optional: without it the instance validates alone
            async with self.client.get(s.url + "/v1/models", headers=self._headers(),
                                       timeout=aiohttp.ClientTimeout(total=self.config.health_timeout_s)) as r:
                cards = orjson.loads(await r.read())["data"]
            names = frozenset(c["id"] for c in cards if isinstance(c.get("id"), str))
            lens = [c["max_model_len"] for c in cards if isinstance(c.get("max_model_len"), int)]
            if names:
                self.models = names
                if self.config.max_model_len is None and lens:
                    self.max_model_len = min(lens)

    def _probe(self, s: InstanceState) -> None:
        """Check an instance now, in the background (it just failed a request mid-answer)."""
        task = asyncio.create_task(self._check(s, strict=True))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    def _headers(self, xid: str | None = None) -> dict[str, str]:
        h = {"content-type": "application/json"}
        if self.config.api_key:
            h["Authorization"] = f"Bearer {self.config.api_key}"
        if xid:
            h["X-Request-Id"] = xid
        return h

    # ---- routing helpers ------------------------------------------------------------------------
    def _fallback(self, role: Role, exclude: set[int]) -> InstanceState | None:
        """Least-busy healthy instance, preferring ``role``'s pool, never one in ``exclude``."""
        cands = [s for s in self.state.healthy() if s.instance_id not in exclude]
        if not cands:
            return None
        pool = [s for s in cands if s.role is role] or cands
        return min(pool, key=lambda s: (s.inflight, s.instance_id))

    def _pick(self, f: Flight, chosen: int, role: Role, exclude: set[int] = frozenset()) -> InstanceState | None:
        s = self.state.instances[chosen] if 0 <= chosen < len(self.state.instances) else None
        if s is not None and s.healthy and s.instance_id not in exclude:
            return s
        alt = self._fallback(role, set(exclude))
        why = "unknown instance" if s is None else (
            f"unhealthy ({s.unhealthy_reason})" if not s.healthy else "excluded")
        f.notes.append(f"{role.value} routed to {chosen}, {why} -> {alt.instance_id if alt else 'none'}")
        return alt

    # ---- endpoints on the Starlette app ----------------------------------------------------
    async def _models(self, request: HTTPRequest) -> Response:
        assert self.client is not None
        for s in self.state.healthy():
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with self.client.get(s.url + "/v1/models", headers=self._headers(),
                                           timeout=aiohttp.ClientTimeout(total=5)) as r:
                    return Response(await r.read(), status_code=r.status, media_type="application/json")
        return _error(503, "no healthy instance")

    async def _health(self, request: HTTPRequest) -> Response:
        ok = bool(self.state.healthy())
        return FastJSON({"healthy": ok, "healthy_instances": len(self.state.healthy())},
                        status_code=200 if ok else 503)

    async def _read_json(self, request: HTTPRequest) -> Any:
        """The body as JSON, at most ``max_body_bytes`` (413 beyond, before reading it all)."""
        cap = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise BadRequest(f"request body is {declared} bytes; the router accepts at most {cap} "
                             "(max_body_bytes)", status=413)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise BadRequest(f"request body exceeds {cap} bytes (max_body_bytes)", status=413)
            chunks.append(chunk)
        return parse_json(b"".join(chunks))

    async def _metrics(self, request: HTTPRequest) -> Response:
        self._refresh_gauges()
        for h in self._histograms:
            h.flush()
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    # ---- the data path (served by httpserver.ClientConnection, not by the Starlette app) --------
    async def handle_client(self, conn: ClientConnection, req: ClientRequest, chat: bool) -> None:
        """Answer one completions/chat request on ``conn``: a whole response, or an SSE relay.

        Runs as a task the connection cancels if the client leaves before a stream starts: the
        leg in flight is then closed (which aborts it on the instance) and the journal says 499."""
        out = await self._serve(req, chat)
        if isinstance(out, Reply):
            f = out.flight
            watch = None if f is None else (lambda delivered, reason: self._reply_sent(f, delivered, reason))
            conn.reply(out.status, out.body, extra=out.extra, close=out.close, watch=watch)
        else:
            out.start(conn)

    def _reply_sent(self, f: Flight, delivered: bool, reason: str) -> None:
        """Journal a whole 200 response: ok once it left the router's buffer, else 499."""
        if delivered:
            self._finish_ok(f)
        else:
            f.status, f.error = 499, f"{reason} before the response left the router"
            self._record(f, rejected=True)

    def _leg_timeout(self, tokens: int, per_token_s: float, cap_s: float) -> float:
        """A leg's deadline: ``leg_timeout_base_s`` + ``per_token_s`` × its tokens, at most ``cap_s``."""
        return min(cap_s, self.config.leg_timeout_base_s + per_token_s * max(0, tokens))

    async def _serve(self, req: ClientRequest, chat: bool) -> "Reply | StreamRelay":
        try:
            body, n_prompt = validate_request(parse_json(req.body), chat, self.max_model_len, self.models)
        except BadRequest as exc:
            return _error_reply(exc.status, str(exc), exc.param)
        st = self.state
        xid = req.header(b"x-request-id")
        f_id = next(st.next_request_id)
        f = Flight(request_id=f_id,
                   x_request_id=xid[:MAX_XID].decode("latin-1") if xid else f"{self._xid_prefix}-{f_id}",
                   arrival_s=st.now(), input_tokens=n_prompt or prompt_tokens(body, chat),
                   max_tokens=max_output_tokens(body), stream=bool(body.get("stream", False)), chat=chat)
        st.arrivals += 1
        st.log("arrival", id=f.request_id, input_tokens=f.input_tokens, t=f.arrival_s)
        path = "/v1/chat/completions" if chat else "/v1/completions"
        request = Request(f.request_id, f.arrival_s, f.input_tokens, f.max_tokens)

        chosen = self.dispatcher.route_prefill(request, self.ctx)
        # A request the dispatcher sent to a MIXED instance falls back to another MIXED one first.
        role = Role.MIXED if st.num_mixed and 0 <= chosen < len(st.instances) and \
            st.instances[chosen].role is Role.MIXED else Role.PREFILL
        p = self._pick(f, chosen, role)
        if p is None:
            return self._finish_error(f, 503, "no healthy instance")
        if p.role is Role.MIXED:
            # The MIXED pool: one plain request, prefill and decode on this instance (no hand-off).
            f.prefill_instance = p.instance_id
            return await self._run_decode(f, p, path, plain_body(body), "mixed", allow_retry=True, body=body)
        if len(st.healthy()) == 1 or (body.get("n") or 1) > 1:
            # One healthy instance: no hand-off possible. n > 1: vLLM's reference proxy hands off
            # one sequence per request, so parallel sampling is served as one plain request.
            return await self._run_decode(f, p, path, plain_body(body), "plain", allow_retry=True, body=body)

        # ---- prefill leg ----
        f.prefill_instance = p.instance_id
        f.prefill_start_s = st.now()
        est = f.input_tokens  # the bookkeeping unit for this leg (text prompts: an estimate)
        st.begin_prefill(p, est)
        kv: dict | None = None
        timeout = self._leg_timeout(f.input_tokens, self.config.prefill_timeout_per_token_s,
                                    self.config.prefill_timeout_s)
        try:
            resp = await self._post_json(p, path, prefill_body(body), f.x_request_id, timeout)
            kv = resp.get("kv_transfer_params") if isinstance(resp, dict) else None
            if not isinstance(kv, dict):  # not a connector's answer: the decode instance prefills locally
                kv = None
            usage = resp.get("usage") or {} if isinstance(resp, dict) else {}
            true_len = usage.get("prompt_tokens") if isinstance(usage, dict) else None
            if isinstance(true_len, int) and true_len > 0:  # the instance's count replaces the estimate
                request = Request(f.request_id, f.arrival_s, true_len, f.max_tokens)
        except LegError as exc:
            st.end_prefill(p, est, computed=False)
            f.prefill_end_s = st.now()
            f.notes.append(f"prefill@{p.instance_id}: {exc}")
            if not exc.retryable:
                return self._finish_error(f, exc.status, str(exc), exc.body)
            self.m_retries_prefill.inc()
            f.retried = True
            q = self._fallback(Role.DECODE, {p.instance_id})
            if q is None:
                return self._finish_error(f, 502, f"prefill leg failed on instance {p.instance_id}: {exc}")
            return await self._run_decode(f, q, path, plain_body(body), "retry", allow_retry=False, body=body)
        except asyncio.CancelledError:  # the client left during the prefill leg
            st.end_prefill(p, est, computed=False)
            f.prefill_end_s = st.now()
            self._client_gone(f)
            raise
        st.end_prefill(p, est, computed=True)
        f.input_tokens = request.input_tokens
        f.prefill_end_s = st.now()
        self.m_prefill_leg.observe(f.prefill_end_s - f.prefill_start_s)
        st.log("prefill_done", id=f.request_id, instance=p.instance_id, t=f.prefill_end_s)

        # ---- decode leg ----
        d = self._pick(f, self.routing.route_decode(request, p.instance_id, self.ctx), Role.DECODE)
        if d is None:
            return self._finish_error(f, 503, "no healthy instance for the decode leg")
        if d.instance_id == p.instance_id:
            # Never hand off to oneself (NIXL: "Cannot register local engine as remote"): plain request.
            return await self._run_decode(f, d, path, plain_body(body), "local", allow_retry=True, body=body)
        return await self._run_decode(f, d, path, decode_body(body, kv), "disaggregated", allow_retry=True,
                                      body=body, kv=bool(kv))

    def _client_gone(self, f: Flight) -> None:
        """Journal a request whose client disconnected before its answer (its legs were cancelled)."""
        f.status, f.error = 499, "client disconnected"
        f.finish_s = self.state.now()
        self._record(f, rejected=True)

    def _transport_failure(self, s: InstanceState, exc: UpstreamError, timeout: float) -> LegError:
        """A leg that got no HTTP answer. Refused/unreachable or silent past its timeout: the
        instance leaves rotation until a health check passes. A connection the instance closed
        before answering may be one request's casualty: a health check decides, now. A leg the
        router aborted (its instance left rotation while it waited) is simply moved."""
        if isinstance(exc, UpstreamAborted):
            return LegError(f"{exc}; leg moved", 503)
        if isinstance(exc, UpstreamTimeout):
            self.state.mark_unhealthy(s, "timeout")
            return LegError(f"instance {s.instance_id} timed out after {timeout:g}s", 504)
        if isinstance(exc, UpstreamConnectError):
            self.state.mark_unhealthy(s, f"{type(exc).__name__}: {exc}")
        else:
            self._probe(s)
        return LegError(f"instance {s.instance_id} unreachable ({type(exc).__name__}: {exc})")

    async def _post_json(self, s: InstanceState, path: str, body: dict, xid: str, timeout: float) -> Any:
        assert self.pool is not None
        if not s.healthy:   # it left rotation while this request was routed to it
            raise LegError(f"instance {s.instance_id} left rotation ({s.unhealthy_reason}); leg moved", 503)
        track = self._waiting[s.instance_id]
        conn: UpstreamConnection | None = None
        try:
            conn, status = await self.pool.open(s.url, path, orjson.dumps(body), xid, total_s=timeout, track=track)
            content = await conn.read_all()
        except UpstreamError as exc:
            raise self._transport_failure(s, exc, timeout) from None
        except BaseException:   # cancelled (the client left): closing the connection aborts the leg
            if conn is not None:
                conn.close()
            raise
        finally:
            if conn is not None:
                track.discard(conn)
        conn.release()
        if status >= 400:
            body_json = _json_or_text(content)
            raise LegError(f"instance {s.instance_id} answered HTTP {status}: {_short(body_json)}",
                           status, retryable=status >= 500, body=body_json)
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise LegError(f"instance {s.instance_id} returned a non-JSON body") from exc

    async def _run_decode(self, f: Flight, d: InstanceState, path: str, leg_body: dict, how: str,
                          allow_retry: bool, body: dict, kv: bool = False) -> "Reply | StreamRelay":
        """Send the decode (or only) leg; one plain retry elsewhere if it fails before any byte.

        ``how="mixed"``: a whole request on a MIXED instance. Its prompt counts as the instance's
        queued prefill work (what the dispatcher's cost rule prices, Alg. 1's Σ T(rp)) until the
        first token is seen (streaming: the stream's first decisive event), then as decode work.
        A non-streaming one shows no first token: it counts as prefill work until its response."""
        st = self.state
        cfg = self.config
        f.path, f.decode_instance, f.kv_transfer = how, d.instance_id, kv
        f.decode_start_s = st.now()
        context = f.input_tokens + 1
        whole = how == "mixed"
        prompt_pending = whole
        if whole:
            st.begin_prefill(d, f.input_tokens)
        else:
            st.begin_decode(d, context)
        # A leg without the prompt's KV computes the prompt itself: its deadline includes that work.
        prefills = not kv
        try:
            if f.stream:
                inject_usage = "stream_options" not in leg_body
                if inject_usage:
                    leg_body = {**leg_body, "stream_options": {"include_usage": True}}
                first_s = self._leg_timeout(f.input_tokens if prefills else 0, cfg.prefill_timeout_per_token_s,
                                            cfg.prefill_timeout_s)
                conn, first = await self._open_stream(d, path, leg_body, f.x_request_id, first_s)
                if whole:   # the first token is out: the prompt's work becomes decode work
                    st.end_prefill(d, f.input_tokens, computed=True)
                    st.begin_decode(d, context)
                    prompt_pending = False
                return StreamRelay(self, f, d, conn, first, context, inject_usage)
            timeout = min(cfg.request_timeout_s,
                          self._leg_timeout(f.input_tokens if prefills else 0, cfg.prefill_timeout_per_token_s,
                                            cfg.prefill_timeout_s) + cfg.decode_timeout_per_token_s * f.max_tokens)
            out = await self._post_json(d, path, leg_body, f.x_request_id, timeout)
        except LegError as exc:
            if prompt_pending:
                st.end_prefill(d, f.input_tokens, computed=False)
            else:
                st.end_decode(d, context)
            f.notes.append(f"{how}@{d.instance_id}: {exc}")
            if allow_retry and exc.retryable:
                q = self._fallback(Role.MIXED if whole else Role.DECODE, {d.instance_id})
                if q is not None:
                    self.m_retries_decode.inc()
                    f.retried = True
                    return await self._run_decode(f, q, path, plain_body(body), "retry", allow_retry=False, body=body)
            return self._finish_error(f, exc.status, str(exc), exc.body)
        except asyncio.CancelledError:   # the client left before the answer: the leg was closed
            if prompt_pending:
                st.end_prefill(d, f.input_tokens, computed=False)
            else:
                st.end_decode(d, context)
            self._client_gone(f)
            raise
        if whole:
            st.end_prefill(d, f.input_tokens, computed=True)
        else:
            st.end_decode(d, context)
        f.finish_s = st.now()
        usage = out.get("usage") or {} if isinstance(out, dict) else {}
        f.output_tokens = int(usage.get("completion_tokens") or 0) if isinstance(usage, dict) else 0
        if how == "disaggregated" or not math.isnan(f.prefill_end_s) and how != "retry":
            f.first_token_s, f.ttft_source = f.prefill_end_s, "prefill_leg"
        else:
            f.first_token_s, f.ttft_source = f.finish_s, "response"
        if isinstance(out, dict):
            out.pop("kv_transfer_params", None)
        return Reply(200, orjson.dumps(out), _xid_header(f.x_request_id), flight=f)   # journaled when sent

    async def _open_stream(self, s: InstanceState, path: str, body: dict,
                           xid: str, first_s: float) -> tuple[UpstreamConnection, bytes]:
        """Open the upstream stream and hold its events until the first decisive one (a token, the
        usage chunk, [DONE] or an error): until then nothing has reached the client, so a failure
        here is still retryable. An error as the first decisive event is the engine failing the
        request before its first token, e.g. a KV pull that failed (vLLM's
        ``kv_load_failure_policy: fail``; seen on vLLM-CPU when the first NIXL hand-off in a new
        direction happens under load): a 5xx there is retried like a leg that never answered.

        ``first_s`` bounds the wait for that first event (headers included); from then on the
        stream may be silent at most ``stream_idle_timeout_s`` between two reads."""
        assert self.pool is not None
        if not s.healthy:
            raise LegError(f"instance {s.instance_id} left rotation ({s.unhealthy_reason}); leg moved", 503)
        idle = self.config.stream_idle_timeout_s
        track = self._waiting[s.instance_id]
        conn: UpstreamConnection | None = None
        try:
            try:
                conn, status = await self.pool.open(s.url, path, orjson.dumps(body), xid, total_s=first_s,
                                                    track=track)
            except UpstreamError as exc:
                raise self._transport_failure(s, exc, first_s) from None
            if status >= 400:
                try:
                    content = await conn.read_all()
                    conn.release()
                except UpstreamError:
                    content = b""
                body_json = _json_or_text(content)
                raise LegError(f"instance {s.instance_id} answered HTTP {status}: {_short(body_json)}",
                               status, retryable=status >= 500, body=body_json)
            buf = b""
            try:
                while True:
                    chunk = await conn.read_some()
                    if not chunk:
                        conn.close()
                        raise LegError(f"instance {s.instance_id} closed the stream before the first event")
                    buf += chunk
                    failure = _first_decisive_event(buf)
                    if failure is None:
                        continue
                    if failure is not _DECISIVE:
                        conn.close()
                        code = failure.get("code") if isinstance(failure, dict) else None
                        status = code if isinstance(code, int) and 400 <= code < 600 else 502
                        raise LegError(f"instance {s.instance_id} failed the request before its first token: "
                                       f"{_short(failure)}", status, retryable=status >= 500, body={"error": failure})
                    break
            except UpstreamError as exc:
                conn.close()
                if isinstance(exc, UpstreamAborted):
                    raise LegError(f"{exc}; leg moved", 503) from None
                if isinstance(exc, UpstreamTimeout):
                    self.state.mark_unhealthy(s, "stream timeout")
                else:
                    # The instance answered (status 200) and then broke this one stream: that is this
                    # request's failure, not proof the engine is down. A health check decides, now.
                    self._probe(s)
                raise LegError(f"instance {s.instance_id} failed before the first chunk ({type(exc).__name__})") from None
        except BaseException:
            if conn is not None:
                track.discard(conn)
                if not isinstance(sys.exc_info()[1], LegError):
                    conn.close()   # cancelled: the client left; closing aborts the leg on the instance
            raise
        track.discard(conn)
        conn.set_timeout(idle_s=idle)   # from here on: the gap between two reads
        return conn, buf

    # ---- outcomes -------------------------------------------------------------------------------
    def _finish_ok(self, f: Flight) -> None:
        f.status = 200
        if not math.isnan(f.first_token_s):
            self.m_ttft.observe(max(0.0, f.first_token_s - f.arrival_s))
            if f.output_tokens > 1:
                self.m_tpot.observe(max(0.0, (f.finish_s - f.first_token_s) / (f.output_tokens - 1)))
        self._record(f, rejected=False)

    def _finish_error(self, f: Flight, status: int, message: str, upstream: Any = None) -> Reply:
        f.status, f.error = status, message
        f.finish_s = self.state.now()
        self._record(f, rejected=True)
        if status >= 400 and isinstance(upstream, dict) and "error" in upstream:
            # The engine's own answer to this request (vLLM's error object): the client's error.
            return Reply(status, orjson.dumps(upstream), _xid_header(f.x_request_id))
        return _error_reply(status if status >= 400 else 502, message)

    def _record(self, f: Flight, rejected: bool) -> None:
        key = ("error" if rejected else "ok", f.path or "none")
        counter = self._m_requests.get(key)
        if counter is None:
            counter = self._m_requests[key] = self.m_requests.labels(outcome=key[0], path=key[1])
        counter.inc()
        rec = RequestRecord(
            request_id=f.request_id, arrival_s=f.arrival_s, input_tokens=f.input_tokens,
            output_tokens=f.output_tokens, prefill_instance=f.prefill_instance if f.prefill_instance >= 0 else f.decode_instance,
            decode_instance=f.decode_instance, first_token_s=f.first_token_s if not rejected else math.nan,
            finish_s=f.finish_s if not rejected else math.nan, rejected=rejected, reject_reason=f.error,
        )
        self.records.append(rec)
        self.completed += 1
        entry = dict(f.__dict__)
        for k in _FLIGHT_TIMES:
            if entry[k] != entry[k]:  # NaN: JSON has none
                entry[k] = None
        entry["notes"] = list(f.notes)
        if self._journal:
            self._journal_lines.append(orjson.dumps(entry) + b"\n")
        entry["t"] = f.finish_s  # the event is the journal line plus its time (not copied again)
        self.state.log_event("finish", entry)

    # ---- admin API ------------------------------------------------------------------------------
    def _authorized(self, request: HTTPRequest) -> Response | None:
        auth = request.headers.get("authorization", "")
        scheme, _, credentials = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():   # the scheme is case-insensitive (RFC 9110)
            return _error(401, "missing bearer token (Authorization: Bearer <token>)")
        if not hmac.compare_digest(credentials.strip().encode(), self.token.encode()):
            return _error(403, "bad token")
        return None

    def state_dict(self) -> dict[str, Any]:
        st = self.state
        insts = []
        for s in st.instances:
            v = dataclasses.asdict(s.view())
            v["role"] = s.role.value
            v.update(url=s.url, unhealthy_reason=s.unhealthy_reason, kv_usage=s.kv_usage,
                     itl_sum_s=s.itl_sum_s, itl_count=s.itl_count, decode_tokens_out=s.decode_tokens_out,
                     prefill_tokens_done=s.prefill_tokens_done, busy_s=st.busy_seconds(s),
                     profile=dataclasses.asdict(self.profiles[s.instance_id]) if s.instance_id in self.profiles else None)
            insts.append(v)
        return {
            "now": st.now(), "routing": self.routing.name, "slo": {"ttft_s": self.slo.ttft_s, "tpot_s": self.slo.tpot_s},
            "instances": insts, "arrivals": st.arrivals, "completed": self.completed,
            "pending_predicted_ttft_misses": self._pending_misses(),
            "mixed": self.mixed_summary(),
            "last_seq": st.last_seq(),
            "flips": [{"t": r.time_s, "id": r.instance_id, "old": r.old.value, "new": r.new.value, "source": r.source}
                      for r in itertools.islice(st.flips, max(0, len(st.flips) - 100), None)],
        }

    def mixed_summary(self) -> dict[str, Any]:
        """The MIXED pool's split policy and what the dispatcher did under it (since the routing
        policy was last set): requests it decided on, sent MIXED by choice, sent MIXED in all."""
        d = self.dispatcher
        return {"config": self.mixed_config.model_dump(), "decisions": d.decisions,
                "chosen_mixed": d.chosen_mixed, "sent_mixed": d.sent_mixed}

    def roles_dict(self) -> dict[str, Any]:
        """Each instance's role by id, and the size of each pool (``GET /roles``)."""
        roles = [s.role for s in self.state.instances]
        return {"roles": [r.value for r in roles], "pools": {r.value: roles.count(r) for r in Role}}

    def _pending_misses(self) -> int:
        """In-flight prefill legs whose TTFT is already predicted to exceed the SLO: resident
        prefill work ahead of them (sequential prefill, Arrow §4.1) plus their own time."""
        # The router tracks sums, not queues; a whole-instance bound is the live approximation:
        # every resident prefill on an instance whose Σ T exceeds the SLO counts as a predicted miss.
        misses = 0
        for s in self.state.instances:
            if s.num_prefill == 0:
                continue
            total = self.profile(s.instance_id).prefill_time_sum(s.num_prefill, s.prefill_tokens, s.prefill_tokens_sq)
            if total > self.slo.ttft_s:
                misses += s.num_prefill
        return misses

    async def _get_state(self, request: HTTPRequest) -> Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        return FastJSON(self.state_dict())

    async def _get_roles(self, request: HTTPRequest) -> Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        return FastJSON(self.roles_dict())

    async def _get_events(self, request: HTTPRequest) -> Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        raw = request.query_params.get("after", "0")
        last_seq = self.state.last_seq()
        if not (raw.isascii() and raw.isdigit()) or int(raw) > last_seq:
            return _error(400, f"query parameter 'after' must be an integer in 0..{last_seq} "
                               f"(the last event), got {raw[:40]!r}", "after")
        events, last, lost = self.state.events_after(int(raw))
        return FastJSON({"events": events, "last_seq": last, "lost": lost, "now": self.state.now()})

    async def _post_roles(self, request: HTTPRequest) -> Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        try:
            b = RolesBody.model_validate(await self._read_json(request))
        except BadRequest as exc:
            return _error(exc.status, str(exc))
        except ValidationError as exc:
            return _error(422, _validation_message(exc))
        if b.flips is not None:
            if b.id is not None or b.role is not None:
                return _error(422, "give either 'flips' or 'id'+'role', not both")
            flips = [(x.id, x.role) for x in b.flips]
        elif b.id is not None and b.role is not None:
            flips = [(b.id, b.role)]
        else:
            return _error(422, "body needs 'id' and 'role' (or a 'flips' list)")
        try:
            done = self.state.apply_flips(flips, source=b.source)
        except FlipError as exc:
            return _error(exc.status, str(exc))
        ast = self._arrow_state()
        for rec in done:
            self.m_flips.labels(source=self._source_label(b.source)).inc()
            if ast is not None and hasattr(ast, "record"):
                ast.record(rec.time_s, rec.instance_id, rec.new, b.source)  # one P→D clock (§5.5)
        return FastJSON({"applied": [{"id": r.instance_id, "old": r.old.value, "new": r.new.value} for r in done],
                             "roles": [s.role.value for s in self.state.instances]})

    async def _post_routing(self, request: HTTPRequest) -> Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        try:
            b = RoutingBody.model_validate(await self._read_json(request))
            if b.policy is None and b.mixed is None:
                return _error(422, "body needs 'policy' (a routing policy) and/or 'mixed' (the MIXED split policy)")
            mixed = MixedConfig.from_mapping(b.mixed, "mixed") if b.mixed is not None else None
            if b.policy is not None:
                self.set_routing(b.policy, mixed)
            elif mixed is not None:   # the split policy only: the routing policy keeps its state
                self.mixed_config = mixed
                self.routing = self._routing
        except BadRequest as exc:
            return _error(exc.status, str(exc))
        except ValidationError as exc:
            return _error(422, _validation_message(exc))
        except ValueError as exc:
            return _error(422, str(exc))
        return FastJSON({"routing": self.routing.name, "mixed": self.mixed_config.model_dump()})

    async def _post_signals(self, request: HTTPRequest) -> Response:
        """The monitor's last LP/LD (Alg. 2) for Alg. 1's overload rule (§5.5), when the two run
        in different processes."""
        if (denied := self._authorized(request)) is not None:
            return denied
        try:
            b = SignalsBody.model_validate(await self._read_json(request))
        except BadRequest as exc:
            return _error(exc.status, str(exc))
        except ValidationError as exc:
            return _error(422, _validation_message(exc))
        ast = self._arrow_state()
        if ast is not None:
            if b.decode_load is not None:
                ast.decode_load = b.decode_load
            if b.prefill_load is not None:
                ast.prefill_load = b.prefill_load
        return FastJSON({"ok": True, "used": ast is not None})


class Reply:
    """A whole data-path response: status, JSON body, preformatted extra header lines, and the
    successful flight it answers (journaled once the response has left the router's buffer)."""

    __slots__ = ("status", "body", "extra", "close", "flight")

    def __init__(self, status: int, body: bytes, extra: bytes = b"", close: bool = False,
                 flight: "Flight | None" = None) -> None:
        self.status, self.body, self.extra, self.close = status, body, extra, close
        self.flight = flight


def _xid_header(xid: str) -> bytes:
    return b"x-request-id: " + xid.encode("latin-1", "replace") + b"\r\n"


def _error_reply(status: int, message: str, param: str | None = None) -> Reply:
    """vLLM's error object; a 413 also closes the connection (the rest of the body is unread)."""
    return Reply(status, orjson.dumps(error_body(status, message, param)), close=status == 413)


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

    def __init__(self, router: Router, f: Flight, d: InstanceState, conn: UpstreamConnection, first: bytes,
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
        client.start_stream(self, _xid_header(self.f.x_request_id))
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
                self.router.m_decode_first.observe(now - f.decode_start_s)
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
            self.err = _short(obj["error"]) or "the instance sent an empty error"
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
            self.err = f"decode instance {self.d.instance_id} failed mid-stream ({_exc_name(exc)})"
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


def _exc_name(exc: UpstreamError) -> str:
    return {UpstreamTimeout: "TimeoutError", UpstreamClosed: "ServerDisconnectedError"}.get(type(exc), type(exc).__name__)


class FastJSON(JSONResponse):
    """A JSON response rendered by orjson (NaN becomes null, as JSON has no NaN)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error(status: int, message: str, param: str | None = None) -> Response:
    """vLLM's error object; a 413 also closes the connection (the rest of the body is unread)."""
    headers = {"Connection": "close"} if status == 413 else None
    return FastJSON(error_body(status, message, param), status_code=status, headers=headers)


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


_DECISIVE: Any = object()  # _first_decisive_event: the stream may go to the client


def _first_decisive_event(buf: bytes) -> Any:
    """Scan the complete SSE events in ``buf``: ``None`` if none is decisive yet (only role-only
    chunks so far), the error object if an error comes before any token, else ``_DECISIVE``."""
    for event in buf.split(b"\n\n")[:-1]:
        if not event.startswith(b"data: "):
            continue
        data = event[6:]
        if data == b"[DONE]":
            return _DECISIVE
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return _DECISIVE  # not ours to judge: relay it
        if not isinstance(obj, dict):
            return _DECISIVE
        if "error" in obj:
            return obj["error"] if obj["error"] is not None else {"message": "error"}
        choices = obj.get("choices")
        first = choices[0] if type(choices) is list and choices else None
        if type(first) is not dict:  # not vLLM's shape: no token to wait for
            first = {}
        if obj.get("usage") or _chunk_tokens(first) or first.get("finish_reason"):
            return _DECISIVE
    return None


def _json_or_text(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return content.decode("utf-8", "replace")


def _short(x: Any, n: int = 300) -> str:
    s = x if isinstance(x, str) else orjson.dumps(x).decode()
    return s if len(s) <= n else s[:n] + "…"


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
