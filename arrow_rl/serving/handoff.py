"""The two-leg prefill -> decode hand-off (vLLM's P/D protocol, docs/live_cluster.md, the router's protocol), and the choice
between it and a single plain leg.

Per request: route the prefill leg (``RequestRouter.route_prefill``, behind the MIXED dispatcher),
send it with ``max_tokens=1`` and ``do_remote_decode``; route the decode leg (``route_decode``) and
send the original body plus the returned ``kv_transfer_params``; the proxy streams the decode leg
back. Both legs never go to one instance with ``kv_transfer_params`` (NIXL rejects a self hand-off
with HTTP 500): when the decode leg lands where the prefill ran, it is sent as a plain request
(vLLM's prefix cache holds the prompt's blocks, so the prompt is not recomputed).

A request goes as one plain leg instead when the dispatcher sends it to a MIXED instance (docs/
live_cluster.md, "The MIXED pool": prefill and decode on that instance, journal path ``mixed``),
when only one instance is healthy, or when it asks for ``n > 1``. A prefill leg that fails is
retried once as a plain request on another healthy instance.
"""

from __future__ import annotations

import asyncio
from typing import Any

from arrow_rl.cluster.base import Role
from arrow_rl.cluster.live.protocol import decode_body, max_output_tokens, plain_body, prefill_body, prompt_tokens
from arrow_rl.cluster.live.state import InstanceState, RouterState
from arrow_rl.cluster.live.validation import BadRequest, parse_json, validate_request
from arrow_rl.serving.config import RouterConfig
from arrow_rl.serving.flight import MAX_XID, Flight, LegError, Reply, error_reply
from arrow_rl.serving.httpserver import ClientRequest
from arrow_rl.serving.router_metrics import RouterMetrics
from arrow_rl.serving.routing_policy import LiveRoutingContext
from arrow_rl.serving.stream_relay import StreamRelay
from arrow_rl.workload.workload import Request


class Handoff:
    """The router's per-request plan (a part of :class:`arrow_rl.serving.router.Router`; it reads
    the attributes annotated here, and sends legs with the router's proxy methods)."""

    config: RouterConfig
    state: RouterState
    metrics: RouterMetrics
    models: frozenset[str] | None
    max_model_len: int | None
    dispatcher: Any            # arrow_rl.arrow.mixed.MixedDispatcher in front of ``routing``
    routing: Any               # the routing policy (a RequestRouter)
    ctx: LiveRoutingContext
    _xid_prefix: str

    async def _serve(self, req: ClientRequest, chat: bool) -> Reply | StreamRelay:
        """Validate one client request, then serve it on one plain leg or by hand-off."""
        try:
            body, n_prompt = validate_request(parse_json(req.body), chat, self.max_model_len, self.models)
        except BadRequest as exc:
            return error_reply(exc.status, str(exc), exc.param)
        f = self._new_flight(req, body, n_prompt, chat)
        path = "/v1/chat/completions" if chat else "/v1/completions"
        request = Request(f.request_id, f.arrival_s, f.input_tokens, f.max_tokens)
        p = self._route_first_leg(f, request)
        if p is None:
            return self._finish_error(f, 503, "no healthy instance")
        if p.role is Role.MIXED:
            # The MIXED pool: one plain request, prefill and decode on this instance (no hand-off).
            f.prefill_instance = p.instance_id
            return await self._run_decode(f, p, path, plain_body(body), "mixed", allow_retry=True, body=body)
        if len(self.state.healthy()) == 1 or (body.get("n") or 1) > 1:
            # One healthy instance: no hand-off possible. n > 1: vLLM's reference proxy hands off
            # one sequence per request, so parallel sampling is served as one plain request.
            return await self._run_decode(f, p, path, plain_body(body), "plain", allow_retry=True, body=body)
        try:
            kv, request = await self._prefill_leg(f, p, request, path, body)
        except LegError as exc:
            return await self._prefill_failed(f, p, exc, path, body)
        return await self._decode_leg(f, p, request, path, body, kv)

    def _new_flight(self, req: ClientRequest, body: dict, n_prompt: int | None, chat: bool) -> Flight:
        """The request's flight, counted and logged as an arrival."""
        st = self.state
        xid = req.header(b"x-request-id")
        f_id = next(st.next_request_id)
        f = Flight(request_id=f_id,
                   x_request_id=xid[:MAX_XID].decode("latin-1") if xid else f"{self._xid_prefix}-{f_id}",
                   arrival_s=st.now(), input_tokens=n_prompt or prompt_tokens(body, chat),
                   max_tokens=max_output_tokens(body), stream=bool(body.get("stream", False)), chat=chat)
        st.arrivals += 1
        st.log("arrival", id=f.request_id, input_tokens=f.input_tokens, t=f.arrival_s)
        return f

    def _route_first_leg(self, f: Flight, request: Request) -> InstanceState | None:
        """Where the request's first leg goes: a MIXED instance or a prefill one (the dispatcher's
        choice); a request sent to a MIXED instance falls back to another MIXED one first."""
        st = self.state
        chosen = self.dispatcher.route_prefill(request, self.ctx)
        role = Role.MIXED if st.num_mixed and 0 <= chosen < len(st.instances) and \
            st.instances[chosen].role is Role.MIXED else Role.PREFILL
        return self._pick(f, chosen, role)

    async def _prefill_leg(self, f: Flight, p: InstanceState, request: Request, path: str,
                           body: dict) -> tuple[dict | None, Request]:
        """Send the prefill leg; its ``kv_transfer_params`` and the request with the instance's own
        prompt length. A failed leg raises ``LegError`` once its bookkeeping is undone."""
        st = self.state
        f.prefill_instance = p.instance_id
        f.prefill_start_s = st.now()
        est = f.input_tokens  # the bookkeeping unit for this leg (text prompts: an estimate)
        st.begin_prefill(p, est)
        timeout = self._leg_timeout(f.input_tokens, self.config.prefill_timeout_per_token_s,
                                    self.config.prefill_timeout_s)
        try:
            resp = await self._post_json(p, path, prefill_body(body), f.x_request_id, timeout)
        except LegError as exc:
            st.end_prefill(p, est, computed=False)
            f.prefill_end_s = st.now()
            f.notes.append(f"prefill@{p.instance_id}: {exc}")
            raise
        except asyncio.CancelledError:  # the client left during the prefill leg
            st.end_prefill(p, est, computed=False)
            f.prefill_end_s = st.now()
            self._client_gone(f)
            raise
        kv, true_len = _handoff_of(resp)
        if true_len is not None:  # the instance's count replaces the estimate
            request = Request(f.request_id, f.arrival_s, true_len, f.max_tokens)
        st.end_prefill(p, est, computed=True)
        f.input_tokens = request.input_tokens
        f.prefill_end_s = st.now()
        self.metrics.prefill_leg.observe(f.prefill_end_s - f.prefill_start_s)
        st.log("prefill_done", id=f.request_id, instance=p.instance_id, t=f.prefill_end_s)
        return kv, request

    async def _prefill_failed(self, f: Flight, p: InstanceState, exc: LegError, path: str,
                              body: dict) -> Reply | StreamRelay:
        """A failed prefill leg: the request's error when not retryable, else one plain retry elsewhere."""
        if not exc.retryable:
            return self._finish_error(f, exc.status, str(exc), exc.body)
        self.metrics.retries_prefill.inc()
        f.retried = True
        q = self._fallback(Role.DECODE, {p.instance_id})
        if q is None:
            return self._finish_error(f, 502, f"prefill leg failed on instance {p.instance_id}: {exc}")
        return await self._run_decode(f, q, path, plain_body(body), "retry", allow_retry=False, body=body)

    async def _decode_leg(self, f: Flight, p: InstanceState, request: Request, path: str, body: dict,
                          kv: dict | None) -> Reply | StreamRelay:
        """Route and send the decode leg with the prefill's KV (a plain leg where the prefill ran)."""
        d = self._pick(f, self.routing.route_decode(request, p.instance_id, self.ctx), Role.DECODE)
        if d is None:
            return self._finish_error(f, 503, "no healthy instance for the decode leg")
        if d.instance_id == p.instance_id:
            # Never hand off to oneself (NIXL: "Cannot register local engine as remote"): plain request.
            return await self._run_decode(f, d, path, plain_body(body), "local", allow_retry=True, body=body)
        return await self._run_decode(f, d, path, decode_body(body, kv), "disaggregated", allow_retry=True,
                                      body=body, kv=bool(kv))


def _handoff_of(resp: Any) -> tuple[dict | None, int | None]:
    """From a prefill leg's answer: its ``kv_transfer_params`` (None when it is not a connector's
    answer: the decode instance then prefills locally) and the prompt length the instance counted."""
    kv = resp.get("kv_transfer_params") if isinstance(resp, dict) else None
    if not isinstance(kv, dict):
        kv = None
    usage = resp.get("usage") or {} if isinstance(resp, dict) else {}
    true_len = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return kv, true_len if isinstance(true_len, int) and true_len > 0 else None
