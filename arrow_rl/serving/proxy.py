"""The router's proxy: one leg to one instance, whole or streamed, and where it goes when it fails.

A leg goes out on ``upstream.UpstreamPool`` (raw asyncio, keep-alive). A whole leg's JSON answer
comes back as a :class:`~arrow_rl.serving.flight.Reply`; a streamed one is held until its first
decisive event (a token, usage, ``[DONE]`` or an error) and then relayed by
:class:`~arrow_rl.serving.stream_relay.StreamRelay`.

Faults (docs/live_cluster.md, "Faults"): a connection error or timeout marks the instance
unhealthy. A decode (or only) leg that fails before any byte reached the client is retried once as
a plain request on another healthy instance; any later failure ends the client's request with a
clean error (an HTTP error, or an SSE ``error`` event then ``[DONE]`` mid-stream).
"""

from __future__ import annotations

import asyncio
import math
import sys
from typing import Any

import orjson

from arrow_rl.cluster.base import Role
from arrow_rl.cluster.live.protocol import plain_body
from arrow_rl.cluster.live.state import InstanceState, RouterState
from arrow_rl.cluster.live.upstream import (UpstreamAborted, UpstreamConnectError, UpstreamConnection, UpstreamError,
                                            UpstreamPool, UpstreamTimeout)
from arrow_rl.serving.config import RouterConfig
from arrow_rl.serving.flight import Flight, LegError, Reply, json_or_text, short, xid_header
from arrow_rl.serving.httpserver import ClientConnection, ClientRequest
from arrow_rl.serving.router_metrics import RouterMetrics
from arrow_rl.serving.stream_relay import DECISIVE, StreamRelay, first_decisive_event


class LegWork:
    """What a decode (or whole) leg holds in the router's bookkeeping. A whole request on a MIXED
    instance holds its prompt as the instance's queued prefill work (what the dispatcher's cost
    rule prices, Alg. 1's Σ T(rp)) until its first token is seen, then decode work; any other leg
    holds decode work (its context) from the start."""

    __slots__ = ("state", "instance", "prompt_tokens", "context", "prompt_pending")

    def __init__(self, state: RouterState, instance: InstanceState, prompt_tokens: int, whole: bool) -> None:
        self.state, self.instance, self.prompt_tokens = state, instance, prompt_tokens
        self.context = prompt_tokens + 1
        self.prompt_pending = whole
        if whole:
            state.begin_prefill(instance, prompt_tokens)
        else:
            state.begin_decode(instance, self.context)

    def first_token(self) -> None:
        """The first token is out: a pending prompt's work becomes decode work."""
        if self.prompt_pending:
            self.state.end_prefill(self.instance, self.prompt_tokens, computed=True)
            self.state.begin_decode(self.instance, self.context)
            self.prompt_pending = False

    def end(self, computed: bool) -> None:
        """The leg is over without a relay (a whole answer, a failure, a cancel)."""
        if self.prompt_pending:
            self.state.end_prefill(self.instance, self.prompt_tokens, computed=computed)
        else:
            self.state.end_decode(self.instance, self.context)


def http_error(s: InstanceState, status: int, content: bytes) -> LegError:
    """An instance's HTTP error answer to a leg (a 5xx may be retried elsewhere, a 4xx is the request's)."""
    body_json = json_or_text(content)
    return LegError(f"instance {s.instance_id} answered HTTP {status}: {short(body_json)}",
                    status, retryable=status >= 500, body=body_json)


class Proxy:
    """The router's legs (a part of :class:`arrow_rl.serving.router.Router`; it reads and sets the
    attributes annotated here, which the router creates, and calls its outcome and health methods)."""

    config: RouterConfig
    state: RouterState
    metrics: RouterMetrics
    pool: UpstreamPool | None
    _waiting: list[set[UpstreamConnection]]

    # ---- the client's side (called by httpserver.ClientConnection) ------------------------------
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

    # ---- where a leg goes ---------------------------------------------------------------------
    def _leg_timeout(self, tokens: int, per_token_s: float, cap_s: float) -> float:
        """A leg's deadline: ``leg_timeout_base_s`` + ``per_token_s`` × its tokens, at most ``cap_s``."""
        return min(cap_s, self.config.leg_timeout_base_s + per_token_s * max(0, tokens))

    def _fallback(self, role: Role, exclude: set[int]) -> InstanceState | None:
        """Least-busy healthy instance, preferring ``role``'s pool, never one in ``exclude``."""
        cands = [s for s in self.state.healthy() if s.instance_id not in exclude]
        if not cands:
            return None
        pool = [s for s in cands if s.role is role] or cands
        return min(pool, key=lambda s: (s.inflight, s.instance_id))

    def _pick(self, f: Flight, chosen: int, role: Role, exclude: set[int] = frozenset()) -> InstanceState | None:
        """The routing policy's ``chosen`` instance when it can take the leg, else a fallback (noted)."""
        s = self.state.instances[chosen] if 0 <= chosen < len(self.state.instances) else None
        if s is not None and s.healthy and s.instance_id not in exclude:
            return s
        alt = self._fallback(role, set(exclude))
        why = "unknown instance" if s is None else (
            f"unhealthy ({s.unhealthy_reason})" if not s.healthy else "excluded")
        f.notes.append(f"{role.value} routed to {chosen}, {why} -> {alt.instance_id if alt else 'none'}")
        return alt

    # ---- a whole leg --------------------------------------------------------------------------
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
        """Send a leg and read its whole JSON answer (``LegError`` when there is none)."""
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
            raise http_error(s, status, content)
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise LegError(f"instance {s.instance_id} returned a non-JSON body") from exc

    # ---- the decode (or only) leg ---------------------------------------------------------------
    async def _run_decode(self, f: Flight, d: InstanceState, path: str, leg_body: dict, how: str,
                          allow_retry: bool, body: dict, kv: bool = False) -> Reply | StreamRelay:
        """Send the decode (or only) leg; one plain retry elsewhere if it fails before any byte.

        ``how="mixed"``: a whole request on a MIXED instance (see :class:`LegWork`). A
        non-streaming one shows no first token: it counts as prefill work until its response."""
        st = self.state
        f.path, f.decode_instance, f.kv_transfer = how, d.instance_id, kv
        f.decode_start_s = st.now()
        work = LegWork(st, d, f.input_tokens, whole=how == "mixed")
        # A leg without the prompt's KV computes the prompt itself: its deadline includes that work.
        prompt_s = self._leg_timeout(f.input_tokens if not kv else 0, self.config.prefill_timeout_per_token_s,
                                     self.config.prefill_timeout_s)
        try:
            if f.stream:
                return await self._stream_leg(f, d, path, leg_body, work, prompt_s)
            timeout = min(self.config.request_timeout_s, prompt_s + self.config.decode_timeout_per_token_s * f.max_tokens)
            out = await self._post_json(d, path, leg_body, f.x_request_id, timeout)
        except LegError as exc:
            work.end(computed=False)
            f.notes.append(f"{how}@{d.instance_id}: {exc}")
            if allow_retry and exc.retryable:
                q = self._fallback(Role.MIXED if how == "mixed" else Role.DECODE, {d.instance_id})
                if q is not None:
                    self.metrics.retries_decode.inc()
                    f.retried = True
                    return await self._run_decode(f, q, path, plain_body(body), "retry", allow_retry=False, body=body)
            return self._finish_error(f, exc.status, str(exc), exc.body)
        except asyncio.CancelledError:   # the client left before the answer: the leg was closed
            work.end(computed=False)
            self._client_gone(f)
            raise
        work.end(computed=True)
        return self._whole_reply(f, out, how)

    async def _stream_leg(self, f: Flight, d: InstanceState, path: str, leg_body: dict, work: LegWork,
                          first_s: float) -> StreamRelay:
        """Open the leg's stream (asking for the usage chunk if the client did not) and hand it to a relay."""
        inject_usage = "stream_options" not in leg_body
        if inject_usage:
            leg_body = {**leg_body, "stream_options": {"include_usage": True}}
        conn, first = await self._open_stream(d, path, leg_body, f.x_request_id, first_s)
        work.first_token()
        return StreamRelay(self, f, d, conn, first, work.context, inject_usage)

    def _whole_reply(self, f: Flight, out: Any, how: str) -> Reply:
        """The client's answer from a whole leg's JSON; its TTFT is the prefill leg's end when a
        prefill leg produced the first token, else the response's arrival."""
        f.finish_s = self.state.now()
        usage = out.get("usage") or {} if isinstance(out, dict) else {}
        f.output_tokens = int(usage.get("completion_tokens") or 0) if isinstance(usage, dict) else 0
        if how == "disaggregated" or not math.isnan(f.prefill_end_s) and how != "retry":
            f.first_token_s, f.ttft_source = f.prefill_end_s, "prefill_leg"
        else:
            f.first_token_s, f.ttft_source = f.finish_s, "response"
        if isinstance(out, dict):
            out.pop("kv_transfer_params", None)
        return Reply(200, orjson.dumps(out), xid_header(f.x_request_id), flight=f)   # journaled when sent

    # ---- a streamed leg, up to its first decisive event -----------------------------------------
    async def _open_stream(self, s: InstanceState, path: str, body: dict,
                           xid: str, first_s: float) -> tuple[UpstreamConnection, bytes]:
        """Open the upstream stream and hold its events until the first decisive one (a token, the
        usage chunk, [DONE] or an error): until then nothing has reached the client, so a failure
        here is still retryable.

        ``first_s`` bounds the wait for that first event (headers included); from then on the
        stream may be silent at most ``stream_idle_timeout_s`` between two reads."""
        assert self.pool is not None
        if not s.healthy:
            raise LegError(f"instance {s.instance_id} left rotation ({s.unhealthy_reason}); leg moved", 503)
        track = self._waiting[s.instance_id]
        conn: UpstreamConnection | None = None
        try:
            try:
                conn, status = await self.pool.open(s.url, path, orjson.dumps(body), xid, total_s=first_s,
                                                    track=track)
            except UpstreamError as exc:
                raise self._transport_failure(s, exc, first_s) from None
            if status >= 400:
                raise http_error(s, status, await _error_content(conn))
            buf = await self._first_events(s, conn)
        except BaseException:
            if conn is not None:
                track.discard(conn)
                if not isinstance(sys.exc_info()[1], LegError):
                    conn.close()   # cancelled: the client left; closing aborts the leg on the instance
            raise
        track.discard(conn)
        conn.set_timeout(idle_s=self.config.stream_idle_timeout_s)   # from here on: the gap between two reads
        return conn, buf

    async def _first_events(self, s: InstanceState, conn: UpstreamConnection) -> bytes:
        """Read until the first decisive event; the bytes read so far. An error as that event is
        the engine failing the request before its first token, e.g. a KV pull that failed (vLLM's
        ``kv_load_failure_policy: fail``; seen on vLLM-CPU when the first NIXL hand-off in a new
        direction happens under load): a 5xx there is retried like a leg that never answered."""
        buf = b""
        try:
            while True:
                chunk = await conn.read_some()
                if not chunk:
                    conn.close()
                    raise LegError(f"instance {s.instance_id} closed the stream before the first event")
                buf += chunk
                failure = first_decisive_event(buf)
                if failure is None:
                    continue
                if failure is not DECISIVE:
                    conn.close()
                    code = failure.get("code") if isinstance(failure, dict) else None
                    status = code if isinstance(code, int) and 400 <= code < 600 else 502
                    raise LegError(f"instance {s.instance_id} failed the request before its first token: "
                                   f"{short(failure)}", status, retryable=status >= 500, body={"error": failure})
                return buf
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


async def _error_content(conn: UpstreamConnection) -> bytes:
    """The body of an instance's HTTP error answer (empty if the connection broke reading it)."""
    try:
        content = await conn.read_all()
        conn.release()
    except UpstreamError:
        content = b""
    return content
