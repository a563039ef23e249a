"""The live P/D router: OpenAI completions/chat to clients, vLLM's two-leg protocol to instances.

The :class:`Router` holds the state (``RouterState``: instances, pools, in-flight work, the event
log), the routing policy and its MIXED dispatcher, and the upstream pools; its jobs live in their
own modules, one part of the class each:

- ``handoff``: per request, one plain leg or the two-leg prefill -> decode hand-off (docs/live_cluster.md, the router's protocol);
- ``proxy``: one leg to one instance, whole or streamed, with one retry elsewhere on failure;
- ``stream_relay``: a streamed decode leg relayed from the instance to the client;
- ``health``: the health loop per instance, and what leaving rotation does to its legs;
- ``outcomes``: how a request ends (metrics, record, ``/events``, the journal);
- ``admin``: the Starlette app (admin API, ``/metrics``, ``/health``, ``/v1/models``).

MIXED instances (docs/live_cluster.md, "The MIXED pool"): ``Router.dispatcher``, the emulator's
``MixedDispatcher`` in front of the routing policy, sends each arrival either to the P->D path or
to one MIXED instance, which gets the client's body as one plain request and runs prefill and
decode itself (journal path ``mixed``). Without MIXED instances it only forwards.

Serving (docs/live_cluster.md, "Speed"): the data path, ``POST /v1/completions`` and
``POST /v1/chat/completions``, does not go through ASGI. ``httpserver.FrontServer`` parses those
requests itself and calls :meth:`Router.handle_client`. Every other endpoint is ``Router.app``,
which the front server calls through a minimal ASGI bridge. Serve with ``httpserver.serve``
(``arrow-rl serve``) or ``httpserver.RouterServer`` (a background thread: tests, demos);
``Router.app`` alone under uvicorn serves only the other endpoints.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import math
import secrets
import uuid
from typing import Any

import aiohttp

from arrow_rl.arrow.mixed import MixedConfig, MixedDispatcher
from arrow_rl.cluster.base import RequestRecord, Role
from arrow_rl.cluster.live.state import RouterState
from arrow_rl.cluster.live.upstream import UpstreamConnection, UpstreamPool
from arrow_rl.perf.profile import InstanceProfile
from arrow_rl.serving.admin import build_app
from arrow_rl.serving.config import RouterConfig
from arrow_rl.serving.handoff import Handoff
from arrow_rl.serving.health import HealthChecks
from arrow_rl.serving.outcomes import Outcomes
from arrow_rl.serving.proxy import Proxy
from arrow_rl.serving.router_metrics import RouterMetrics
from arrow_rl.serving.routing_policy import LiveRoutingContext, make_live_router
from arrow_rl.serving.stream_relay import StreamRelay

# Used only when no measured profile exists (arrow routing without `arrow-rl live-profile`):
# ordering-only defaults, documented in docs/live_cluster.md.
FALLBACK_PROFILE = InstanceProfile(prefill_a=0.0, prefill_b=1e-4, prefill_c=0.02,
                                   decode_slope=1e-7, decode_intercept=0.01)


class Router(Handoff, Proxy, HealthChecks, Outcomes):
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
        self.metrics = RouterMetrics(config.max_flip_sources)
        self.app = build_app(self)

    # ---- lifecycle ------------------------------------------------------------------------------
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

    # ---- routing policy -------------------------------------------------------------------------
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

    def arrow_state(self) -> Any:
        """Arrow's shared state when the policy is Arrow's (its P→D clock, the monitor's LP/LD), else None."""
        return getattr(self.routing, "state", None)

    def _note_flip(self, instance_id: int, role: Role) -> None:
        """Count a flip Algorithm 1 made while routing (Arrow's P→D clock already has it, §5.5)."""
        self.metrics.count_alg1_flip()

    # ---- what the admin API reports ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``GET /state``: every instance's load, health, counters and profile, and the router's totals."""
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
