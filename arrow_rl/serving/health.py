"""Instance health, seen from the router: a check loop per instance, and what leaving rotation does.

Faults (docs/live_cluster.md, "Faults"): a connection error or timeout marks the instance
unhealthy (no new work until a health check passes). When an instance leaves rotation, its legs
that have produced no output yet are aborted (and retried elsewhere at once), and its streams that
have also been silent for a health timeout are ended. The loop also learns what the instances
serve (``/v1/models``) and reads their KV usage (``/metrics``) for routing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import orjson

from arrow_rl.cluster.live.scraper import quick_kv
from arrow_rl.cluster.live.state import InstanceState, RouterState
from arrow_rl.cluster.live.upstream import UpstreamAborted, UpstreamConnection, UpstreamPool, UpstreamTimeout
from arrow_rl.serving.config import RouterConfig

log = logging.getLogger(__name__)

KV_READ_EVERY_S = 1.0   # the health loop reads an instance's KV usage from /metrics at most this often


class HealthChecks:
    """The router's health checks (a part of :class:`arrow_rl.serving.router.Router`; it reads and
    sets the attributes annotated here, which the router creates)."""

    config: RouterConfig
    state: RouterState
    client: aiohttp.ClientSession | None
    pool: UpstreamPool | None
    models: frozenset[str] | None
    max_model_len: int | None
    _waiting: list[set[UpstreamConnection]]
    _streaming: list[set]
    _probes: set[asyncio.Task]
    _kv_read_at: list[float]

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
            await self._read_kv_usage(s, timeout)
        else:
            s.failures += 1
            if strict or s.failures >= self.config.unhealthy_after_failures:
                self.state.mark_unhealthy(s, "health check failed")
        return ok

    async def _read_kv_usage(self, s: InstanceState, timeout: aiohttp.ClientTimeout) -> None:
        """KV usage and capacity from the instance's ``/metrics``, at most once per ``KV_READ_EVERY_S``
        (``/metrics`` is heavier than ``/health``); optional routing input, so a failure is ignored."""
        assert self.client is not None
        now = asyncio.get_running_loop().time()
        if now - self._kv_read_at[s.instance_id] < KV_READ_EVERY_S:
            return
        self._kv_read_at[s.instance_id] = now
        with contextlib.suppress(Exception):
            async with self.client.get(s.url + "/metrics", timeout=timeout, headers=self._headers()) as m:
                text = await m.text()
            usage, capacity = quick_kv(text)
            s.kv_usage = usage
            s.kv_capacity_tokens = capacity or s.kv_capacity_tokens

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
        if loop is not None:
            self._end_silent_streams(s, loop)

    def _end_silent_streams(self, s: InstanceState, loop: asyncio.AbstractEventLoop) -> None:
        """Streams that already sent tokens cannot be moved (docs/live_cluster.md, "Faults"), but one
        that has also been silent for a health timeout is ended now, not after stream_idle_timeout_s.
        A stream paused by its slow client is the client's, not the instance's: it stays."""
        streams = self._streaming[s.instance_id]
        if not self.config.end_silent_streams or not streams:
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
        """Headers of the router's own requests to an instance (the API key vLLM may require)."""
        h = {"content-type": "application/json"}
        if self.config.api_key:
            h["Authorization"] = f"Bearer {self.config.api_key}"
        if xid:
            h["X-Request-Id"] = xid
        return h
