"""The router's Starlette app: the admin API (bearer token) and the other non-data endpoints.

Admin API (token-protected): ``GET /state``, ``GET /events``, ``GET|POST /roles`` (flips),
``POST /routing`` (the routing policy and the MIXED split policy), ``POST /signals`` (the
monitor's LP/LD for Alg. 1's overload rule). Open: ``GET /health``, ``GET /metrics``,
``GET /v1/models``. The data path (``/v1/completions``, ``/v1/chat/completions``) never comes here:
``httpserver.FrontServer`` hands it to the router directly. Every body is validated strictly
(unknown fields, coerced types and non-finite loads are refused with 422).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from typing import Annotated, Any, AsyncIterator, Protocol, TypeVar

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from arrow_rl.arrow.mixed import MixedConfig
from arrow_rl.cluster.base import Role
from arrow_rl.cluster.live.state import FlipError, RouterState
from arrow_rl.cluster.live.validation import BadRequest, error_body, parse_json
from arrow_rl.serving.config import RouterConfig
from arrow_rl.serving.router_metrics import CONTENT_TYPE, RouterMetrics

# Admin ids are JSON integers only: "1", 1.0 and true are refused, not coerced.
InstanceId = Annotated[int, Strict()]
# A load signal is a finite number (Alg. 2's LP/LD); NaN/Infinity would poison Alg. 1's comparisons.
Load = Annotated[float, Strict(), Field(allow_inf_nan=False, ge=0.0)]
# A flip's source becomes a Prometheus label value: short, plain characters (the set of distinct
# values is bounded separately, RouterConfig.max_flip_sources).
SOURCE_RE = r"^[A-Za-z0-9_.:@/+-]{1,64}$"


class FlipBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: InstanceId
    role: Role


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


Body = TypeVar("Body", bound=BaseModel)


class AdministeredRouter(Protocol):
    """What the app needs of the router (``arrow_rl.serving.router.Router``)."""

    config: RouterConfig
    token: str
    state: RouterState
    metrics: RouterMetrics
    client: aiohttp.ClientSession | None
    routing: Any
    mixed_config: MixedConfig

    async def startup(self) -> None: ...

    async def shutdown(self) -> None: ...

    def set_routing(self, name: str, mixed: MixedConfig | None = None) -> None: ...

    def arrow_state(self) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def roles_dict(self) -> dict[str, Any]: ...

    def _headers(self, xid: str | None = None) -> dict[str, str]: ...


class FastJSON(JSONResponse):
    """A JSON response rendered by orjson (NaN becomes null, as JSON has no NaN)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def build_app(router: AdministeredRouter) -> Starlette:
    """The Starlette app of ``router``; its lifespan starts and stops the router."""
    api = AdminAPI(router)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await router.startup()
        try:
            yield
        finally:
            await router.shutdown()

    return Starlette(routes=[
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/health", api.health, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/state", api.get_state, methods=["GET"]),
        Route("/roles", api.post_roles, methods=["POST"]),
        Route("/roles", api.get_roles, methods=["GET"]),
        Route("/routing", api.post_routing, methods=["POST"]),
        Route("/signals", api.post_signals, methods=["POST"]),
        Route("/events", api.get_events, methods=["GET"]),
    ], lifespan=lifespan)


class AdminAPI:
    """The endpoints of :func:`build_app`, over one router."""

    def __init__(self, router: AdministeredRouter) -> None:
        self.router = router

    # ---- open endpoints -----------------------------------------------------------------------
    async def models(self, request: HTTPRequest) -> Response:
        """The first healthy instance's ``/v1/models``, as it answered."""
        r = self.router
        assert r.client is not None
        for s in r.state.healthy():
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with r.client.get(s.url + "/v1/models", headers=r._headers(),
                                        timeout=aiohttp.ClientTimeout(total=5)) as resp:
                    return Response(await resp.read(), status_code=resp.status, media_type="application/json")
        return _error(503, "no healthy instance")

    async def health(self, request: HTTPRequest) -> Response:
        ok = bool(self.router.state.healthy())
        return FastJSON({"healthy": ok, "healthy_instances": len(self.router.state.healthy())},
                        status_code=200 if ok else 503)

    async def metrics(self, request: HTTPRequest) -> Response:
        return Response(self.router.metrics.render(self.router.state.instances), media_type=CONTENT_TYPE)

    # ---- token-protected endpoints --------------------------------------------------------------
    async def get_state(self, request: HTTPRequest) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        return FastJSON(self.router.state_dict())

    async def get_roles(self, request: HTTPRequest) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        return FastJSON(self.router.roles_dict())

    async def get_events(self, request: HTTPRequest) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        st = self.router.state
        raw = request.query_params.get("after", "0")
        last_seq = st.last_seq()
        if not (raw.isascii() and raw.isdigit()) or int(raw) > last_seq:
            return _error(400, f"query parameter 'after' must be an integer in 0..{last_seq} "
                               f"(the last event), got {raw[:40]!r}", "after")
        events, last, lost = st.events_after(int(raw))
        return FastJSON({"events": events, "last_seq": last, "lost": lost, "now": st.now()})

    async def post_roles(self, request: HTTPRequest) -> Response:
        """Apply one flip or a batch atomically (the router validates the end state first)."""
        b = await self._authorized_body(request, RolesBody)
        if isinstance(b, Response):
            return b
        if b.flips is not None:
            if b.id is not None or b.role is not None:
                return _error(422, "give either 'flips' or 'id'+'role', not both")
            flips = [(x.id, x.role) for x in b.flips]
        elif b.id is not None and b.role is not None:
            flips = [(b.id, b.role)]
        else:
            return _error(422, "body needs 'id' and 'role' (or a 'flips' list)")
        r = self.router
        try:
            done = r.state.apply_flips(flips, source=b.source)
        except FlipError as exc:
            return _error(exc.status, str(exc))
        ast = r.arrow_state()
        for rec in done:
            r.metrics.count_flip(b.source)
            if ast is not None and hasattr(ast, "record"):
                ast.record(rec.time_s, rec.instance_id, rec.new, b.source)  # one P→D clock (§5.5)
        return FastJSON({"applied": [{"id": x.instance_id, "old": x.old.value, "new": x.new.value} for x in done],
                         "roles": [s.role.value for s in r.state.instances]})

    async def post_routing(self, request: HTTPRequest) -> Response:
        """Select the routing policy and/or the MIXED pool's split policy."""
        b = await self._authorized_body(request, RoutingBody)
        if isinstance(b, Response):
            return b
        if b.policy is None and b.mixed is None:
            return _error(422, "body needs 'policy' (a routing policy) and/or 'mixed' (the MIXED split policy)")
        r = self.router
        try:
            mixed = MixedConfig.from_mapping(b.mixed, "mixed") if b.mixed is not None else None
            if b.policy is not None:
                r.set_routing(b.policy, mixed)
            elif mixed is not None:   # the split policy only: the routing policy keeps its state
                r.mixed_config = mixed
                r.routing = r.routing
        except ValidationError as exc:
            return _error(422, _validation_message(exc))
        except ValueError as exc:
            return _error(422, str(exc))
        return FastJSON({"routing": r.routing.name, "mixed": r.mixed_config.model_dump()})

    async def post_signals(self, request: HTTPRequest) -> Response:
        """The monitor's last LP/LD (Alg. 2) for Alg. 1's overload rule (§5.5), when the two run
        in different processes."""
        b = await self._authorized_body(request, SignalsBody)
        if isinstance(b, Response):
            return b
        ast = self.router.arrow_state()
        if ast is not None:
            if b.decode_load is not None:
                ast.decode_load = b.decode_load
            if b.prefill_load is not None:
                ast.prefill_load = b.prefill_load
        return FastJSON({"ok": True, "used": ast is not None})

    # ---- token and body ---------------------------------------------------------------------------
    def _denied(self, request: HTTPRequest) -> Response | None:
        """The 401/403 answer for a request without the router's bearer token; None when it has it."""
        auth = request.headers.get("authorization", "")
        scheme, _, credentials = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():   # the scheme is case-insensitive (RFC 9110)
            return _error(401, "missing bearer token (Authorization: Bearer <token>)")
        if not hmac.compare_digest(credentials.strip().encode(), self.router.token.encode()):
            return _error(403, "bad token")
        return None

    async def _authorized_body(self, request: HTTPRequest, model: type[Body]) -> Body | Response:
        """The request's body as ``model``, or the error answer (no token, too large, not JSON, invalid)."""
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            return model.model_validate(await self._read_json(request))
        except BadRequest as exc:
            return _error(exc.status, str(exc))
        except ValidationError as exc:
            return _error(422, _validation_message(exc))

    async def _read_json(self, request: HTTPRequest) -> Any:
        """The body as JSON, at most ``max_body_bytes`` (413 beyond, before reading it all)."""
        cap = self.router.config.max_body_bytes
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


def _error(status: int, message: str, param: str | None = None) -> Response:
    """vLLM's error object; a 413 also closes the connection (the rest of the body is unread)."""
    headers = {"Connection": "close"} if status == 413 else None
    return FastJSON(error_body(status, message, param), status_code=status, headers=headers)


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
