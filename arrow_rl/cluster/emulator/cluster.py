"""``EmulatedCluster``: a discrete-event emulator of a prefill/decode cluster of vLLM-like instances.

Each instance is stateless (Arrow §5.2: it can run both phases; a role is only a routing label) and
schedules like vLLM v1 with chunked prefill: every iteration takes the running decode sequences first
(Arrow §5.4), then chunks of running and waiting prompts up to ``max_num_batched_tokens``, at most
``max_num_seqs`` running; KV lives in blocks, and when it runs out the newest running request is
preempted by recompute; prompt blocks found in the instance's prefix cache are not computed
(prefix_cache.py). The cluster moves from event to event: an arrival, the end of an iteration (or of
a run of identical decode iterations summed in closed form), a KV transfer sending its last byte or
landing (transfers share NICs, transfers.py), a KV lease expiring, a flip delay ending, the end of an
``advance`` window. See docs/emulator.md for the full semantics and its "Code map": this module is
the engine. The batch scheduler (scheduler.py) plans each batch without changing any state and the
engine applies the plan; the request table, events, decode-run maths, KV-cache manager, transfers,
views, the window accumulator and the audit live in their own modules.

Request life cycle (Arrow §4.1-4.3; docs/arrow.md):
  arrival → router.route_prefill → queued on the prefill instance → chunked prefill (done:
  ``prefill_done_s``) → router.route_decode → if another instance: its FCFS waiting line there
  (shared with new prompts) until it has KV room, then the KV transfer over shared NICs (with
  prefix caching, only the blocks not cached there), the KV is freed on the source once it has
  landed → the decode instance's first step emits the client's first token (TTFT ends here, as a
  streaming client sees it) → decode iterations → finish. Decoding in place (or colocated), the
  prefill's own token is the client's first token. Colocated mode skips the decode routing, and so
  does a *plain* request: one whose prompt was placed on a MIXED instance, served there
  whole exactly as a colocated instance serves it; its path is fixed at arrival, whatever flips follow.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence

import numpy as np

from arrow_rl.cluster.base import (
    Cluster,
    ClusterInfo,
    InstanceView,
    MetricsWindow,
    Mode,
    RequestRecord,
    Role,
    SLO,
)
from arrow_rl.cluster.emulator import fastpath
from arrow_rl.cluster.emulator.audit import audit_state
from arrow_rl.cluster.emulator.batch_log import BatchLogEntry
from arrow_rl.cluster.emulator.config import EmulatorConfig
from arrow_rl.cluster.emulator.decode_run import iterations_done_by, run_time
from arrow_rl.cluster.emulator.events import (
    FLIP_DELAY_END, ITERATION_END, KV_LANDED, LEASE_CHECK, NIC_BYTES_SENT, EventQueue)
from arrow_rl.cluster.emulator.instance import IDLE, DECODE_RUN, ONE_ITERATION, InstanceState
from arrow_rl.cluster.emulator.kv_cache import KvCacheManager
from arrow_rl.cluster.emulator.prefix_cache import PrefixCache
from arrow_rl.cluster.emulator.requests import (
    DECODING, FINISHED, LANDED, NEW, PREFILLING, QUEUED_FOR_KV, REJECTED, TRANSFERRING, WAITING, RequestTable)
from arrow_rl.cluster.emulator.scheduler import DECODES_ONLY, BatchPlan, BatchScheduler, SchedulerLimits
from arrow_rl.cluster.emulator.transfers import KvTransfers
from arrow_rl.cluster.emulator.views import LAZY_SUPPORTED, settle, view_at, views_at
from arrow_rl.cluster.emulator.window import WindowAccumulator
from arrow_rl.perf.preset import Preset
from arrow_rl.perf.profile import InstanceProfile
from arrow_rl.routing.simple import LeastLoadedRouter
from arrow_rl.workload.workload import Workload

_MIXED = Role.MIXED
_PREFILL = Role.PREFILL
_DECODE = Role.DECODE


def _fits_surely(inst: InstanceState, n: int, it: int) -> bool:
    """A sufficient test for ``inst.other_blocks + inst.decode_set_blocks(it) <= inst.capacity_blocks``
    (``n`` = ``inst.num_decoding``) without the histogram: every sequence's ceil((o + it) / bs) is below
    (o + it) / bs + 1, so the decode set's blocks are below (Σo + n·it) / bs + n. When this says
    no, the exact count decides."""
    bs = inst.block_size
    return bs * inst.other_blocks + inst.decode_offset_sum + n * (it + bs) <= bs * inst.capacity_blocks


def _decode_tokens_at(inst: InstanceState, t: float) -> int:
    """``InstanceView.decode_tokens`` of ``inst`` at ``t`` (views.py ``fresh_view``), without the view."""
    n = inst.num_decoding
    if not n:
        return inst.decode_legs_waiting_tokens
    it = inst.decode_iterations
    if inst.plan == DECODE_RUN and t > inst.plan_start:
        if t >= inst.plan_end:
            it += inst.plan_iterations
        elif inst.done_memo_version == inst.plan_version and \
                inst.done_memo_from <= t - inst.plan_start < inst.done_memo_until:
            it += inst.done_memo_iterations
        else:
            it += iterations_done_by(inst, t)
    return inst.decode_offset_sum + n * (it + 1) + inst.decode_legs_waiting_tokens

# No token, hand-off or completion anywhere for this long (on top of the KV lease timeout, which
# unwedges transfer cycles by itself) while requests are resident means the cluster is wedged; the
# resident requests are then rejected as "stuck". A safety net: no known scenario reaches it.
STUCK_AFTER_S = 300.0


class EmulatedCluster(Cluster):
    """The emulator behind ``arrow-rl simulate``, the Gymnasium environment and the oracle.

    Args:
        workload: the requests to replay (arrival times from 0).
        config: the cluster (preset, size, mode, vLLM limits, SLOs, flip delay).
        router: a ``RequestRouter`` (default ``LeastLoadedRouter``); it is ``reset`` here.
        seed: kept for stochastic extensions (``self.rng``); the emulator itself draws nothing.
        preset: an explicit ``Preset`` (tests, custom hardware); default ``get_preset(config.preset)``.
        profile: Arrow §5.2 instance profile; default ``profile_instance(preset)``.
    """

    audit_every_event = False   # tests: run ``audit()`` after every event (slow)
    # Opt-in record of every planned batch (tests/test_vllm_scheduler_conformance.py diffs it against
    # vLLM's own scheduler): set to a list and each planned iteration appends a ``BatchLogEntry``; a
    # closed-form decode run appends one entry with ``iterations`` > 1. ``None`` costs one check per batch.
    batch_log: list[BatchLogEntry] | None = None

    def __init__(self, workload: Workload, config: EmulatorConfig, router=None, seed: int = 0,
                 preset: Preset | None = None, profile: InstanceProfile | None = None) -> None:
        from arrow_rl.perf.presets import get_preset
        from arrow_rl.perf.profile import profile_instance

        if router is None:
            router = LeastLoadedRouter()
        self.config = config
        self.workload = workload
        self.preset = preset if preset is not None else get_preset(
            config.preset, gpu_memory_utilization=config.gpu_memory_utilization)
        self._profile = profile if profile is not None else profile_instance(self.preset)
        self.router = router
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._slo = config.slo
        self._mode = config.mode
        self._colocated = config.mode is Mode.COLOCATED
        self._lat = self.preset.latency
        self._scheduler = BatchScheduler(SchedulerLimits(
            max_num_batched_tokens=config.max_num_batched_tokens, max_num_seqs=config.max_num_seqs,
            client_timeout_s=config.client_timeout_s, exact_stepping=config.exact_stepping))
        # prefix caching (vLLM automatic prefix caching): only workloads that carry prefixes pay for it
        self._pfx = config.enable_prefix_caching and workload.has_prefixes
        self._build_instances(config)
        self._coef: dict[int, tuple[float, float]] = {}

        self.requests = RequestTable(workload)
        n = self.requests.num
        # The API server's per-request time before the engine sees a request (HTTP, tokenization):
        # part of every client-visible TTFT and e2e latency (docs/latency_model.md).
        self._frontend_s = float(getattr(self._lat, "frontend_s", 0.0))
        self._records: list[RequestRecord] = []
        self._ended = 0
        self._next = 0               # next arrival index
        self._events = EventQueue()
        self._now = 0.0              # time of the event being processed, or the advanced-to time
        self._progress_s = 0.0       # last time a token was emitted, KV landed or a request ended
        self._t_adv = 0.0            # end of the last advance
        self.flips: list[tuple[float, int, Role]] = []
        self._all_healthy_from = -math.inf   # the end of the last flip delay: no instance is blocked after it
        self.num_preemptions = 0
        self.num_transfers = 0
        self.num_lease_expiries = 0  # KV leases freed by the prefill side's timeout (then recomputed)
        self._stuck_s = STUCK_AFTER_S + config.kv_lease_timeout_s
        self._transfers = KvTransfers(self.preset, config.num_instances, n, self._events,
                                      config.kv_lease_timeout_s, config.kv_link_sharing)
        self._kv = KvCacheManager(workload, self.requests, self._bs)
        # window accumulators (per-instance ones live on InstanceState)
        self._window = WindowAccumulator()
        self.router.reset(config.num_instances)
        # fast path (fastpath.py): the plain least-loaded router's choices, made from the running sums
        self._least_loaded = fastpath.ENABLED and type(router) is LeastLoadedRouter
        self._exact = config.exact_stepping
        # fast path (fastpath.py, views.py): lazy views while a router decides
        self._lazy_ok = fastpath.ENABLED and LAZY_SUPPORTED
        self._deciding = False
        self._lazy_views: list = []
        self._info = self._describe()

    def _build_instances(self, config: EmulatorConfig) -> None:
        """The instances in their initial roles, with the preset's KV geometry (and a prefix cache
        each when prefix caching acts)."""
        bs = self.preset.block_size
        self._bs = bs
        cap_blocks = self.preset.kv_capacity_tokens // bs
        if cap_blocks <= 0:
            raise ValueError(f"preset {self.preset.name!r} has no KV capacity")
        self._cap_blocks = cap_blocks
        self._max_len = self.preset.max_model_len
        roles = config.initial_roles()
        self._initial_roles = roles
        self._insts = [InstanceState(i, roles[i], cap_blocks, bs) for i in range(config.num_instances)]
        if self._pfx:
            for inst in self._insts:
                inst.prefix_cache = PrefixCache()
        self._num_mixed = sum(1 for r in roles if r is Role.MIXED)

    def _describe(self) -> ClusterInfo:
        """The static facts of the cluster (``Cluster.info``)."""
        config = self.config
        return ClusterInfo(
            num_instances=config.num_instances, preset=self.preset.name, slo=self._slo, mode=self._mode,
            initial_roles=self._initial_roles,
            extra={"max_num_batched_tokens": config.max_num_batched_tokens, "max_num_seqs": config.max_num_seqs,
                   "kv_capacity_tokens": self._cap_blocks * self._bs, "block_size": self._bs,
                   "flip_delay_s": config.flip_delay_s, "router": getattr(self.router, "name", "?"),
                   "kv_lease_timeout_s": config.kv_lease_timeout_s, "kv_link_sharing": config.kv_link_sharing,
                   "enable_prefix_caching": config.enable_prefix_caching})

    def __repr__(self) -> str:
        roles = "".join(inst.role.value[0].upper() for inst in self._insts)
        return (f"EmulatedCluster({self.preset.name}, {self._mode.value}, roles={roles}, now={self._now:.3f}s, "
                f"ended={self._ended}/{self.requests.num})")

    # ------------------------------------------------------------------ Cluster / RoutingContext
    @property
    def now(self) -> float:
        return self._now

    @property
    def info(self) -> ClusterInfo:
        return self._info

    @property
    def slo(self) -> SLO:
        return self._slo

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def done(self) -> bool:
        return self._ended == self.requests.num

    def num_mixed(self) -> int:
        """Instances labelled MIXED now (O(1): the MIXED dispatcher asks at every arrival)."""
        return self._num_mixed

    def profile(self, instance_id: int) -> InstanceProfile:
        self._check_id(instance_id)
        return self._profile

    def instances(self) -> list[InstanceView]:
        if self._deciding and not self._num_mixed:
            # a router places a prompt: lazy views of the decode pool (views.py); not with MIXED
            # instances, whose dispatcher weighs the decode pool's loads at every arrival
            return views_at(self._insts, self._now, self._lazy_views, _DECODE)
        return views_at(self._insts, self._now)

    def instance(self, instance_id: int) -> InstanceView:
        self._check_id(instance_id)
        return view_at(self._insts[instance_id], self._now)

    def completed(self) -> list[RequestRecord]:
        return list(self._records)

    def first_token_s(self, request_id: int) -> float:
        """When the client saw the request's first token (NaN: not yet)."""
        return self.requests.first_token_s[request_id]

    def ended_since(self, start: int) -> list[RequestRecord]:
        """Records of requests that ended after the first ``start`` (records are kept in the order
        requests end), so a caller can follow outcomes incrementally without copying them all."""
        return self._records[start:]

    def records(self) -> list[RequestRecord]:
        """Records of every request, ended or not (unended ones have NaN times)."""
        ended = {r.request_id for r in self._records}
        out = list(self._records)
        for rid in range(self.requests.num):
            if rid not in ended:
                out.append(self.requests.record(rid))
        out.sort(key=lambda r: r.request_id)
        return out

    @property
    def prefix_query_tokens(self) -> int:
        """Prompt tokens looked up in a prefix cache over the run so far."""
        return self._kv.query_tokens

    @property
    def prefix_hit_tokens(self) -> int:
        """Prompt tokens found in a prefix cache (not computed) over the run so far."""
        return self._kv.hit_tokens

    @property
    def prefix_cache_hit_rate(self) -> float:
        """Prompt tokens found in a prefix cache / prompt tokens looked up, over the run so far."""
        q = self.prefix_query_tokens
        return self.prefix_hit_tokens / q if q else 0.0

    @property
    def num_ended(self) -> int:
        return self._ended

    def flip(self, instance_id: int, role: Role) -> None:
        """Relabel an instance (Arrow §5.2: resident work finishes in place, nothing migrates).

        The same for flips to and from MIXED: admitted prompts keep the path they arrived on (a
        plain request still decodes here, a prefill leg still gets its decode leg routed) and only
        new arrivals follow the new role. With ``flip_delay_s`` > 0 the instance admits no new work
        of any role for that long."""
        self._check_id(instance_id)
        role = Role(role)
        if self._lazy_views:   # a router flips mid-decision: its views describe the state before
            settle(self._lazy_views)
        inst = self._insts[instance_id]
        if inst.role is role:
            return
        self._num_mixed += (role is Role.MIXED) - (inst.role is Role.MIXED)
        inst.role = role
        inst.cached_view = None
        t = self._now
        self.flips.append((t, instance_id, role))
        delay = self.config.flip_delay_s
        if delay > 0:
            inst.blocked_until = inst.wake_at = t + delay
            self._all_healthy_from = max(self._all_healthy_from, t + delay)
            self._events.push(t + delay, FLIP_DELAY_END, instance_id, 0)

    def flip_history(self) -> list[tuple[float, int, Role]]:
        """Every effective relabel so far (``self.flips``, copied): the router's as well as a controller's."""
        return list(self.flips)

    def advance(self, dt: float) -> MetricsWindow:
        """Run ``dt`` seconds of cluster time; return the metrics of [now, now + dt)."""
        if not dt > 0:
            raise ValueError(f"advance needs dt > 0, got {dt}")
        t1 = self._t_adv + dt
        self._run_until(t1)
        self._now = self._t_adv = t1
        for inst, t_first in self._window.count_plans_in_progress(self._insts, t1):
            self._emit_new_decodes(inst, t_first)   # a decode run's first step is out: first tokens
        views = views_at(self._insts, t1)
        return self._window.close(t1, self._insts, views, self._slo, self._profile, self._mode, self.requests)

    def run_until_done(self, max_time_s: float | None = None,
                       progress: Callable[[float], None] | None = None) -> list[RequestRecord]:
        """Advance until every request has ended (or ``max_time_s`` of cluster time); return records.

        ``progress(now)`` is called every ~1% of the trace's span."""
        requests = self.requests
        span = max(requests.arrival_s[-1] if requests.num else 0.0, 1.0)
        step = span / 100.0 if progress is not None else math.inf
        limit = math.inf if max_time_s is None else float(max_time_s)
        while not self.done and self._now < limit:
            target = min(self._now + step, limit)
            self._run_until(target)
            self._now = self._t_adv = max(self._now, target) if math.isfinite(target) else self._now
            if progress is not None:
                progress(self._now)
        return self.completed()

    def clone(self) -> "EmulatedCluster":
        """An independent deep copy of the whole state (oracle lookahead, RL resets).

        Per-request lists and per-instance queues are copied; the workload, preset, latency model,
        profile and finished records (immutable) are shared; the router is deep-copied."""
        import copy

        new = EmulatedCluster.__new__(EmulatedCluster)
        d = dict(self.__dict__)
        for name in ("_records", "flips"):
            d[name] = list(d[name])
        d["requests"] = self.requests.copy()
        d["_events"] = self._events.copy()
        d["_kv"] = self._kv.copy(d["requests"])
        d["_window"] = self._window.copy()
        d["_transfers"] = self._transfers.copy(d["_events"])
        d["_insts"] = [inst.copy() for inst in self._insts]
        d["_coef"] = self._coef  # a pure cache
        d["_lazy_views"] = []
        d["_deciding"] = False   # cloned by a router mid-decision: the clone hands out plain views
        d["router"] = copy.deepcopy(self.router)
        d["rng"] = copy.deepcopy(self.rng)
        if "batch_log" in d:   # the clone's batches are its own
            d["batch_log"] = list(d["batch_log"]) if d["batch_log"] is not None else None
        new.__dict__.update(d)
        return new

    def clone_with_future(self, future: Workload) -> "EmulatedCluster":
        """``clone()`` whose requests not yet arrived are replaced by ``future`` (absolute arrival
        times, none before now): the present state is exactly the clone's, the future a forecast's
        (what a planner that may not see the trace branches; branching.py)."""
        from arrow_rl.cluster.emulator.branching import with_future

        return with_future(self.clone(), future)

    def arrived_since(self, start: int) -> tuple[list[float], list[int]]:
        """Arrival times and prompt lengths of the requests that reached the engine, from the
        ``start``-th on: what a router has seen so far (output lengths are known only at finish)."""
        from arrow_rl.cluster.emulator.branching import arrived_since

        return arrived_since(self, start)

    # ------------------------------------------------------------------ internals: helpers
    def _check_id(self, instance_id: int) -> None:
        if not isinstance(instance_id, (int, np.integer)) or not 0 <= instance_id < len(self._insts):
            raise ValueError(f"unknown instance id {instance_id!r}; the cluster has instances "
                             f"0..{len(self._insts) - 1}")

    def _target(self, i, what: str) -> int:
        if not isinstance(i, (int, np.integer)) or not 0 <= i < len(self._insts):
            raise ValueError(f"router {getattr(self.router, 'name', self.router)!r}: {what} returned "
                             f"{i!r}, not an instance id in 0..{len(self._insts) - 1}")
        return int(i)

    # ------------------------------------------------------------------ internals: fast routing
    # ``LeastLoadedRouter``'s choices (arrow_rl/routing/simple.py) computed from the instances'
    # running sums: the same candidate pools (healthy instances of the role, else all healthy, else
    # all), the same keys as the views carry, the same tie-break (lowest id).
    def _least_loaded_prefill(self, t: float) -> InstanceState:
        insts = self._insts
        pool = insts
        if t < self._all_healthy_from:   # a flip delay may still block some instance
            pool = [inst for inst in insts if t >= inst.blocked_until] or insts
        best = None
        if self._colocated:
            for inst in pool:
                key = inst.prefill_tokens_left + _decode_tokens_at(inst, t)
                if best is None or key < best_key:
                    best, best_key = inst, key
            return best
        pool = [inst for inst in pool if inst.role is _PREFILL] or pool
        for inst in pool:
            key = inst.prefill_tokens_left
            if best is None or key < best_key:
                best, best_key = inst, key
        return best

    def _least_loaded_decode(self, t: float) -> int:
        insts = self._insts
        pool = insts
        if t < self._all_healthy_from:   # a flip delay may still block some instance
            pool = [inst for inst in insts if t >= inst.blocked_until] or insts
        pool = [inst for inst in pool if inst.role is _DECODE] or pool
        best = None
        for inst in pool:
            if best is not None and inst.plan == DECODE_RUN and t < inst.plan_end:
                # a lower bound first, without solving the run: its iterations done by t are at
                # least those of the memo (of this run, at an earlier time); decode tokens grow
                # with them, and only a strictly smaller key beats the lower id already found
                dt = t - inst.plan_start
                memo = inst.done_memo_version == inst.plan_version and dt >= inst.done_memo_from
                k = inst.done_memo_iterations if memo else 0
                n = inst.num_decoding
                low = inst.decode_offset_sum + n * (inst.decode_iterations + k + 1) + inst.decode_legs_waiting_tokens
                if dt > 0 and low >= best_key:
                    continue
            key = _decode_tokens_at(inst, t)
            if best is None or key < best_key:
                best, best_key = inst, key
        return best.id

    # ------------------------------------------------------------------ internals: event loop
    def _run_until(self, t1: float) -> None:
        requests = self.requests
        heap = self._events.heap
        arr = requests.arrival_s
        num_requests = requests.num
        insts = self._insts
        audit = self.audit_every_event
        fe = self._frontend_s
        stuck_s = self._stuck_s
        nxt = self._next   # the next arrival (only this loop moves it)
        ta = arr[nxt] + fe if nxt < num_requests else math.inf
        heappop = heapq.heappop
        while True:
            if audit:
                self.audit()
            th = heap[0][0] if heap else math.inf
            if ta <= th:
                if ta >= t1:
                    break
                self._now = ta
                self._next = nxt + 1
                self._arrive(nxt, ta)
                nxt += 1
                ta = arr[nxt] + fe if nxt < num_requests else math.inf
                continue
            if th >= t1:
                break
            t, kind, _, a, b = heappop(heap)
            self._now = t
            if kind == ITERATION_END:
                inst = insts[a]
                if b == inst.plan_version and inst.plan != IDLE:
                    if inst.plan == DECODE_RUN:
                        self._commit_run(inst, t)
                    else:
                        self._commit_iteration(inst, t)
                    if t - self._progress_s > stuck_s:
                        self._reject_stuck()
            elif kind == KV_LANDED:
                if b == self._transfers.version[a]:
                    self._land(a, t)
            elif kind == NIC_BYTES_SENT:
                if b == self._transfers.version[a]:
                    self._transfers.bytes_sent(a, t)
            elif kind == LEASE_CHECK:
                self._expire_leases(t)
            else:  # FLIP_DELAY_END: a flip delay ended
                self._kick(insts[a], t)
        if not heap and self._next >= num_requests and self._ended < num_requests:
            self._reject_stuck()

    def _arrive(self, rid: int, t: float) -> None:
        requests = self.requests
        n_in = requests.input_tokens[rid]
        self._window.on_arrival(n_in)
        peak = n_in + requests.output_tokens[rid] - 1   # KV tokens while the last token is computed
        if n_in + requests.output_tokens[rid] > self._max_len:
            self._reject(rid, f"exceeds max_model_len: input+output tokens {n_in + requests.output_tokens[rid]} > "
                              f"{self._max_len}")
            return
        if -(-peak // self._bs) > self._cap_blocks:
            self._reject(rid, f"exceeds KV capacity: needs {peak} KV tokens > {self._cap_blocks * self._bs} "
                              f"on one instance")
            return
        if self._least_loaded:
            inst = self._least_loaded_prefill(t)
            i = inst.id
        else:
            self._deciding = self._lazy_ok
            try:
                i = self.router.route_prefill(requests.router_request(rid), self)
            finally:
                self._deciding = False
                if self._lazy_views:
                    settle(self._lazy_views)
            i = self._target(i, "route_prefill")
            inst = self._insts[i]
        requests.instance[rid] = i
        requests.prefill_instance[rid] = i
        # a MIXED instance serves the request whole: fixed now, whatever later flips do
        if self._colocated or inst.role is _MIXED:
            requests.plain[rid] = True
        requests.state[rid] = WAITING
        inst.enqueue_prompt(requests, rid)
        inst.prefill_legs += 1
        inst.prefill_tokens_left += n_in
        inst.prefill_tokens_left_sq += n_in * n_in
        inst.cached_view = None
        self._kick(inst, t)

    def _reject(self, rid: int, reason: str) -> None:
        requests = self.requests
        requests.state[rid] = REJECTED
        requests.reject_reason[rid] = reason
        self._ended += 1
        self._window.on_reject()
        self._records.append(requests.record(rid))

    def _drop_timed_out(self, inst: InstanceState, rid: int) -> None:
        """A waiting, never-started prompt whose client gave up (``client_timeout_s``): vLLM aborts it."""
        requests = self.requests
        n = requests.input_tokens[rid] + requests.generated[rid]
        inst.prefill_legs -= 1
        inst.prefill_tokens_left -= n
        inst.prefill_tokens_left_sq -= n * n
        inst.cached_view = None
        self._reject(rid, f"client timeout: not started {self.config.client_timeout_s:g} s after arrival")

    def _reject_stuck(self) -> None:
        """Nothing can move any more (e.g. a cycle of KV transfers, each waiting for KV held by the
        other): end every resident request explicitly rather than dropping it silently, and empty
        the instances so that later arrivals start on a clean cluster."""
        requests = self.requests
        for rid in range(requests.num):
            if requests.state[rid] not in (FINISHED, REJECTED, NEW):
                self._reject(rid, "stuck: no instance could make progress (KV transfer deadlock)")
        for inst in self._insts:
            inst.clear_work()
        self._transfers.clear()
        if self._pfx:
            for inst in self._insts:
                inst.prefix_cache.clear()
            self._kv.clear()
        self._progress_s = self._now

    def _kick(self, inst: InstanceState, t: float) -> None:
        """New work or freed KV at ``t``: take it into account at the next iteration boundary."""
        plan = inst.plan
        if plan == IDLE:
            self._schedule(inst, t)
        elif plan == DECODE_RUN:
            # first boundary at or after t (the running iteration always completes):
            # iterations_done_by(inst, t) with its quick answers inlined, then run_time(inst, k)
            K = inst.plan_iterations
            start = inst.plan_start
            dt = t - start
            if dt <= 0:
                k = 0
            elif t >= inst.plan_end:
                return   # k = K: the run is over by t
            elif inst.done_memo_version == inst.plan_version and inst.done_memo_from <= dt < inst.done_memo_until:
                k = inst.done_memo_iterations
            else:
                k = iterations_done_by(inst, t)
            alpha, beta = inst.run_step_base_s, inst.run_step_per_token_s
            C0, n = inst.run_start_context, inst.plan_decodes
            if k < K and k * alpha + beta * (C0 * k + n * (k * (k - 1) // 2)) < dt:
                k += 1
            if k >= K:
                return
            inst.plan_version += 1
            inst.cached_view = None
            if k == 0:      # nothing of the run has happened yet: plan again now
                inst.plan = IDLE
                self._schedule(inst, t)
                return
            inst.plan_iterations = k
            inst.plan_end = end = start + (k * alpha + beta * (C0 * k + n * (k * (k - 1) // 2)))
            ev = self._events
            seq = ev.seq + 1
            ev.seq = seq
            heapq.heappush(ev.heap, (end, ITERATION_END, seq, inst.id, inst.plan_version))
        # ONE_ITERATION: the batch is re-formed when the iteration ends

    # ------------------------------------------------------------------ internals: batches
    def _schedule(self, inst: InstanceState, t: float) -> None:
        """At an iteration boundary: form the next batch (scheduler.py), apply it, and plan it as
        one iteration, a closed-form run of decode iterations, or idle."""
        inst.cached_view = None
        it = inst.decode_iterations
        n = inst.num_decoding
        if not (inst.landed or inst.prefilling or inst.waiting or inst.transfer_queue) and (
                _fits_surely(inst, n, it + 1) or
                inst.other_blocks + (inst.decode_set_blocks(it + 1) if n else 0) <= inst.capacity_blocks):
            # the planner's commonest answer (``DECODES_ONLY``: only the decode set runs, its KV
            # fits), decided here with the planner's own test and planned without a plan object
            inst.plan_version += 1
            inst.plan_start = t
            inst.plan_iterations_counted = 0
            inst.plan_decodes = n
            if not n:
                inst.plan = IDLE
                return
            requests = self.requests
            k = inst.next_finish(requests) - it
            if self._exact or not (_fits_surely(inst, n, it + k) or
                                   inst.other_blocks + inst.decode_set_blocks(it + k) <= inst.capacity_blocks):
                k = self._scheduler.decode_run_length(inst, k, False)
            self._start_run(inst, t, n, it, k)
            return
        plan = self._scheduler.plan(inst, self.requests, t, self._kv.plan_view(inst) if self._pfx else None)
        if plan is not DECODES_ONLY:
            self._apply(inst, plan, t)
        admit_ok = t >= inst.blocked_until
        if not admit_ok and (inst.waiting or inst.transfer_queue) and inst.wake_at != inst.blocked_until:
            inst.wake_at = inst.blocked_until
            self._events.push(inst.blocked_until, FLIP_DELAY_END, inst.id, 0)
        preempted = bool(plan.preempted)
        it = inst.decode_iterations
        inst.plan_version += 1
        inst.plan_start = t
        inst.plan_iterations_counted = 0
        n = inst.num_decoding
        inst.plan_decodes = n
        if plan.chunks:
            self._start_iteration(inst, t, plan.chunks, n, it)
        elif n:
            k = inst.next_finish(self.requests) - it
            after_preemption = preempted and bool(inst.waiting or inst.transfer_queue or inst.landed)
            if self._exact or after_preemption or not _fits_surely(inst, n, it + k):
                k = self._scheduler.decode_run_length(inst, k, after_preemption)
            self._start_run(inst, t, n, it, k)
        else:
            inst.plan = IDLE
            if preempted and (inst.landed or (inst.waiting or inst.transfer_queue) and admit_ok):
                # everything running was preempted: vLLM's next step (now) admits from waiting
                self._schedule(inst, t)

    def _start_iteration(self, inst: InstanceState, t: float, chunks: list[tuple[int, int]], n: int, it: int) -> None:
        """Plan one iteration from ``t`` of the prompt ``chunks`` beside the decode set (``n``
        sequences, ``it`` iterations run so far), timed by the latency model, and push its end
        event; the plan version and start are already set."""
        comp = self.requests.computed
        ptok = 0
        att = 0.0
        for rid, c in chunks:
            ptok += c
            att += c * (comp[rid] + 0.5 * c)
        ctx = inst.decode_set_context(it) if n else 0
        dur = self._lat.iteration_time(ptok, att, n, ctx)
        inst.plan = ONE_ITERATION
        inst.plan_chunks = chunks
        inst.plan_prefill_tokens = ptok
        inst.plan_iterations = 1
        inst.plan_end = t + dur
        self._events.push(inst.plan_end, ITERATION_END, inst.id, inst.plan_version)
        if self.batch_log is not None:
            self._log_batch(inst, t, chunks, 1)

    def _start_run(self, inst: InstanceState, t: float, n: int, it: int, k: int) -> None:
        """Plan ``k`` decode-only iterations of the decode set (``n`` sequences, ``it`` iterations
        run so far) from ``t`` as one closed-form run (decode_run.py) and push its end event; the
        plan version and start are already set."""
        coef = self._coef.get(n)   # the latency model's (alpha, beta) per batch size, cached
        if coef is None:
            coef = self._coef[n] = tuple(float(x) for x in self._lat.decode_time_coefficients(n))
        alpha, beta = coef
        C0 = inst.decode_offset_sum + n * (it + 1)   # decode_set_context(it)
        inst.plan = DECODE_RUN
        inst.run_step_base_s = alpha
        inst.run_step_per_token_s = beta
        inst.run_start_context = C0
        inst.plan_iterations = k
        inst.plan_chunks = ()
        inst.plan_prefill_tokens = 0
        inst.plan_end = end = t + (k * alpha + beta * (C0 * k + n * (k * (k - 1) // 2)))   # run_time(inst, k)
        ev = self._events
        seq = ev.seq + 1
        ev.seq = seq
        heapq.heappush(ev.heap, (end, ITERATION_END, seq, inst.id, inst.plan_version))
        if self.batch_log is not None:
            self._log_batch(inst, t, (), k)

    def _log_batch(self, inst: InstanceState, t: float, chunks: Sequence[tuple[int, int]], iterations: int) -> None:
        """Append the batch just planned on ``inst`` to ``batch_log``: one token per decode
        sequence, then the prompt chunks."""
        state = self.requests.state
        tokens = {rid: 1 for rid in inst.running if state[rid] == DECODING}
        tokens.update(chunks)
        self.batch_log.append(BatchLogEntry(inst.id, t, tokens, iterations))

    def _apply(self, inst: InstanceState, plan: BatchPlan, t: float) -> None:
        """Carry out a batch plan: KV allocations, preemptions, joins, admissions, KV pulls. (Each
        part loads what it needs: most plans have one part, and this runs at every busy boundary.)"""
        requests = self.requests
        bs = inst.block_size
        if plan.materialised:
            self._allocate_with_preemption(inst, plan)
        elif len(plan.chunks) > plan.admitted:   # the running prompts' chunks (the first ones)
            blk, comp, chunks = requests.blocks, requests.computed, plan.chunks
            for k in range(len(chunks) - plan.admitted):
                rid, c = chunks[k]
                add = -(-(comp[rid] + c) // bs) - blk[rid]
                blk[rid] += add
                inst.other_blocks += add
        if plan.joined:   # landed KV joins the running batch
            blk, gen, comp, n_in = requests.blocks, requests.generated, requests.computed, requests.input_tokens
            for _ in range(plan.joined):
                rid = inst.landed.popleft()
                inst.other_blocks -= blk[rid]
                blk[rid] = 0
                inst.decode_legs_waiting -= 1
                inst.decode_legs_waiting_tokens -= n_in[rid] + gen[rid]
                inst.running.append(rid)
                # the pulled KV covers the prompt but its last token, which the first decode step
                # recomputes to emit the first output token: the decode instance produces every output
                # token (vLLM v1 ``_update_waiting_for_remote_kv``); the prefill's token is not sent on
                gen[rid] = 0
                comp[rid] = n_in[rid] - 1
                inst.join_decode_set(requests, rid, comp[rid])
                inst.awaiting_first_token.append(rid)
        if plan.evicted:
            entries = inst.prefix_cache.entries
            for key in plan.evicted:
                entries.pop(key, None)
        if plan.admitted or plan.timed_out:
            self._admit(inst, plan)
        if plan.pulls:   # decode legs start pulling their KV into the blocks they get
            blk, n_in, src = requests.blocks, requests.input_tokens, requests.prefill_instance
            hits = plan.pull_hit_blocks
            for k in range(plan.pulls):
                rid = inst.transfer_queue.popleft()
                if hits:   # prefix caching: the blocks cached here are not pulled
                    tokens = n_in[rid] - self._kv.pull(inst, rid, hits[k])
                else:
                    tokens = n_in[rid]
                    add = -(-tokens // bs)
                    blk[rid] = add
                    inst.other_blocks += add
                inst.transfers_in += 1
                requests.state[rid] = TRANSFERRING
                self.num_transfers += 1
                self._transfers.start(rid, src[rid], inst.id, tokens, t)

    def _allocate_with_preemption(self, inst: InstanceState, plan: BatchPlan) -> None:
        """The exact allocation loop's plan (``plan.materialised``): the decode set is expanded to
        explicit requests, the KV allocations and preemptions are applied in the planned order, and
        the surviving decodes go back into the lazy decode set."""
        requests = self.requests
        blk = requests.blocks
        decs = inst.expand_decode_set(requests)
        is_dec = set(decs)
        allocs = plan.allocations
        j = 0
        for victim, before in plan.preempted:
            for rid, add in allocs[j:before]:
                blk[rid] += add
                inst.other_blocks += add
            j = before
            inst.running.pop()   # the victim: the newest running request
            self._preempt(inst, victim, victim in is_dec)
        for rid, add in allocs[j:]:
            blk[rid] += add
            inst.other_blocks += add
        inst.collapse_decode_set(requests, decs)

    def _admit(self, inst: InstanceState, plan: BatchPlan) -> None:
        """Take the plan's admitted prompts (the last chunks) and dropped ones off the head of
        ``inst.waiting``, in queue order: the admitted get their KV blocks and start prefilling."""
        requests = self.requests
        comp, blk, st = requests.computed, requests.blocks, requests.state
        bs = inst.block_size
        timed_out = plan.timed_out
        if timed_out:   # the waiting queue's head holds the dropped and the admitted, in order
            dropped = set(timed_out)
            for _ in range(len(timed_out) + plan.admitted):
                rid = inst.waiting.popleft()
                if rid in dropped:
                    self._drop_timed_out(inst, rid)
        chunks, hits = plan.chunks, plan.hit_blocks
        first = len(chunks) - plan.admitted
        for k in range(plan.admitted):
            rid, c = chunks[first + k]
            if not timed_out:
                inst.waiting.popleft()
            if hits and comp[rid] == 0:   # prefix caching: looked up in the cache
                self._kv.admit(inst, rid, hits[k], c)
            else:
                add = -(-(comp[rid] + c) // bs) - blk[rid]
                blk[rid] += add
                inst.other_blocks += add
            inst.running.append(rid)
            inst.prefilling.append(rid)
            st[rid] = PREFILLING

    def _preempt(self, inst: InstanceState, rid: int, was_decode: bool) -> None:
        """Preemption by recompute: drop the KV, back to the front of the waiting queue."""
        requests = self.requests
        requests.preemptions[rid] += 1
        self.num_preemptions += 1
        nb = requests.blocks[rid]
        inst.other_blocks -= nb
        requests.blocks[rid] = 0
        if self._pfx:
            self._kv.release(inst, rid, nb, self._now)
        old_rem = requests.input_tokens[rid] + requests.generated[rid] - requests.computed[rid]
        requests.computed[rid] = 0
        total = requests.input_tokens[rid] + requests.generated[rid]
        if was_decode:
            inst.decode_legs_waiting += 1
            inst.decode_legs_waiting_tokens += total
        else:
            inst.prefilling.remove(rid)
            if requests.leg[rid] == 0:
                inst.prefill_tokens_left += total - old_rem
                inst.prefill_tokens_left_sq += total * total - old_rem * old_rem
        requests.state[rid] = WAITING
        inst.enqueue_preempted(requests, rid)

    # ------------------------------------------------------------------ internals: iteration end
    def _commit_run(self, inst: InstanceState, t: float) -> None:
        """A closed-form decode run of ``inst`` ends at ``t``: count its tokens (the iterations not
        counted yet by a window's end, ``WindowAccumulator.count_plans_in_progress``, and the first
        tokens of its first step), finish the sequences whose last token is out, then form the
        next batch."""
        inst.cached_view = None
        inst.w_busy_s += t - max(inst.plan_start, self._window.start_s)
        n = inst.plan_decodes
        K, counted = inst.plan_iterations, inst.plan_iterations_counted
        if inst.awaiting_first_token and n and counted == 0:
            self._emit_new_decodes(inst, inst.plan_start + run_time(inst, 1))
        inst.w_decode_iterations += K - counted
        # run_time(inst, K) − run_time(inst, counted); run_time(inst, 0) is exactly 0.0
        span = K * inst.run_step_base_s + inst.run_step_per_token_s * (
            inst.run_start_context * K + n * (K * (K - 1) // 2))
        inst.w_decode_time_s += span - run_time(inst, counted) if counted else span
        inst.w_decode_tokens += n * (K - counted)
        inst.decode_iterations += K
        inst.decode_stall_since = self._progress_s = t
        inst.plan = IDLE
        heap = inst.finish_heap
        if heap and heap[0][0] <= inst.decode_iterations:
            self._finish_decodes(inst, t)
        self._schedule(inst, t)

    def _commit_iteration(self, inst: InstanceState, t: float) -> None:
        """One iteration of ``inst`` ends at ``t``: count its tokens (one per decode sequence, the
        first ones of sequences that joined from a transfer, the prefill tokens), finish the
        sequences whose last token is out, complete the prompt chunks, place the decode legs of the
        prompts just completed (the router sees this instance idle, its finished sequences gone),
        then form the next batch."""
        inst.cached_view = None
        inst.w_busy_s += t - max(inst.plan_start, self._window.start_s)
        n = inst.plan_decodes
        if n:
            if inst.awaiting_first_token:
                self._emit_new_decodes(inst, t)
            inst.w_decode_iterations += 1
            inst.w_decode_time_s += t - inst.plan_start
            inst.w_decode_tokens += n
            inst.decode_iterations += 1
            inst.decode_stall_since = self._progress_s = t
        inst.w_prefill_tokens += inst.plan_prefill_tokens
        chunks = inst.plan_chunks
        inst.plan_chunks = ()
        inst.plan = IDLE
        heap = inst.finish_heap
        if heap and heap[0][0] <= inst.decode_iterations:
            self._finish_decodes(inst, t)
        for rid in self._complete_chunks(inst, chunks, t):
            self._route_decode_leg(inst, rid, t)
        self._schedule(inst, t)

    def _finish_decodes(self, inst: InstanceState, t: float) -> None:
        """The decode sequences whose last token is out by now leave the decode set and finish
        (heap entries of sequences that left the set or the instance are dropped)."""
        requests = self.requests
        heap = inst.finish_heap
        state, last_token, where = requests.state, requests.last_token_iteration, requests.instance
        iid = inst.id
        while heap and heap[0][0] <= inst.decode_iterations:
            f, rid = heapq.heappop(heap)
            if state[rid] == DECODING and last_token[rid] == f and where[rid] == iid:
                kv = inst.leave_decode_set(requests, rid)
                inst.running.remove(rid)
                if self._pfx:
                    self._kv.release_finished(inst, rid, kv, t)
                self._finish(rid, t)

    def _complete_chunks(self, inst: InstanceState, chunks: list[tuple[int, int]], t: float) -> list[int]:
        """Count the prompt chunks an iteration computed; a prompt (or a preempted decode leg's
        recompute) now complete outputs its token (``_prompt_done``). Returns the prefill legs
        whose decode leg the router must place."""
        requests = self.requests
        comp, gen, n_in, leg = requests.computed, requests.generated, requests.input_tokens, requests.leg
        handoffs: list[int] = []
        any_done = False
        for rid, c in chunks:
            total = n_in[rid] + gen[rid]
            old_rem = total - comp[rid]
            comp[rid] += c
            rem = old_rem - c
            if self._pfx and rid in self._kv.held_on:
                self._kv.register(inst, rid, comp[rid] // inst.block_size, t)
            if leg[rid] == 0:
                inst.prefill_tokens_left -= c
                inst.prefill_tokens_left_sq += rem * rem - old_rem * old_rem
            if not rem:
                any_done = True
                if self._prompt_done(inst, rid, total, t):
                    handoffs.append(rid)
        if any_done:
            state = requests.state
            inst.prefilling = [r for r in inst.prefilling if state[r] == PREFILLING]
        return handoffs

    def _prompt_done(self, inst: InstanceState, rid: int, total: int, t: float) -> bool:
        """The context of ``rid`` (``total`` tokens) is computed on ``inst`` at ``t`` and its next
        token is out: the request finishes, keeps decoding here, or (a disaggregated prefill leg)
        needs its decode leg placed: then returns True."""
        requests = self.requests
        leg, gen = requests.leg, requests.generated
        requests.state[rid] = DECODING  # provisional: leaves the prefill list (``_complete_chunks``)
        self._progress_s = t
        if leg[rid] == 0:
            inst.prefill_legs -= 1
            requests.prefill_done_s[rid] = t
            if requests.plain[rid] or gen[rid] + 1 >= requests.output_tokens[rid]:
                self._client_first(rid, t)
        else:   # a preempted decode leg recomputed its context: its next token is out
            inst.decode_legs_waiting -= 1
            inst.decode_legs_waiting_tokens -= total
            inst.w_decode_tokens += 1
            if requests.first_token_s[rid] != requests.first_token_s[rid]:   # NaN: a lost transfer, recomputed here
                self._client_first(rid, t)
        gen[rid] += 1
        if gen[rid] >= requests.output_tokens[rid]:
            nb = requests.blocks[rid]
            inst.other_blocks -= nb
            requests.blocks[rid] = 0
            if self._pfx:
                self._kv.release_finished(inst, rid, requests.computed[rid], t, nb)
            inst.running.remove(rid)
            requests.state[rid] = FINISHED
            leg[rid] = 1
            self._finish(rid, t)
            return False
        if leg[rid] == 0:
            leg[rid] = 1
            if not requests.plain[rid]:
                return True
            requests.decode_instance[rid] = inst.id
        self._to_decode_here(inst, rid, t)
        return False

    def _route_decode_leg(self, inst: InstanceState, rid: int, t: float) -> None:
        """Arrow §4.2-4.3: the prompt of ``rid`` is computed on the prefill instance ``inst``; the
        router places the decode leg, here (no KV transfer, Arrow §5.2: the prefill's token goes to
        the client) or on another instance (``_queue_transfer``)."""
        inst.cached_view = None   # the previous iteration changed this instance
        requests = self.requests
        if self._least_loaded:
            d = self._least_loaded_decode(t)
        else:
            d = self._target(self.router.route_decode(requests.router_request(rid), inst.id, self), "route_decode")
        requests.decode_instance[rid] = d
        if d == inst.id:
            self._client_first(rid, t)
            self._to_decode_here(inst, rid, t)
        else:
            self._queue_transfer(inst, rid, self._insts[d], t)

    def _queue_transfer(self, inst: InstanceState, rid: int, dest: InstanceState, t: float) -> None:
        """The decode leg of ``rid`` goes to ``dest``: it leaves ``inst``'s batch, its KV stays on
        ``inst`` under a lease until pulled, and it queues FCFS on ``dest`` for KV room."""
        requests = self.requests
        inst.running.remove(rid)
        requests.source_blocks[rid] = requests.blocks[rid]   # stays counted in inst.other_blocks until it lands
        requests.blocks[rid] = 0
        requests.state[rid] = QUEUED_FOR_KV
        if dest.num_decoding == 0 and dest.decode_legs_waiting == 0:
            dest.decode_stall_since = t
        dest.enqueue_pull(requests, rid)
        self._transfers.lease(rid, t)   # the prefill side holds the KV until it is pulled
        dest.decode_legs_waiting += 1
        dest.decode_legs_waiting_tokens += requests.input_tokens[rid] + requests.generated[rid]
        dest.cached_view = None
        requests.instance[rid] = dest.id
        self._kick(dest, t)

    def _to_decode_here(self, inst: InstanceState, rid: int, t: float) -> None:
        """A request whose prompt is computed keeps decoding on this instance (it is running)."""
        requests = self.requests
        if inst.num_decoding == 0 and inst.decode_legs_waiting == 0:
            inst.decode_stall_since = t
        inst.other_blocks -= requests.blocks[rid]
        requests.blocks[rid] = 0
        inst.join_decode_set(requests, rid, requests.computed[rid])

    def _client_first(self, rid: int, t: float) -> None:
        """The client sees the request's first token at ``t`` (TTFT ends). Windows attribute it to
        the instance that computed the prompt, like the live cluster's per-prefill TTFT."""
        requests = self.requests
        requests.first_token_s[rid] = t
        self._window.on_first_token(requests.prefill_instance[rid], t - requests.arrival_s[rid])

    def _emit_new_decodes(self, inst: InstanceState, t: float) -> None:
        """The first decode step after a transfer landed ended at ``t``: vLLM's decode instance
        recomputes the last prompt token and emits the client's first token itself (the loaded KV
        covers the prompt minus its last token: ``_update_waiting_for_remote_kv`` in
        vllm/v1/core/sched/scheduler.py). Skips those preempted meanwhile (their recompute emits)."""
        requests = self.requests
        st, where, ft, iid = requests.state, requests.instance, requests.first_token_s, inst.id
        for rid in inst.awaiting_first_token:
            if st[rid] == DECODING and where[rid] == iid and ft[rid] != ft[rid]:
                self._client_first(rid, t)
        inst.awaiting_first_token = []

    def _finish(self, rid: int, t: float) -> None:
        self._progress_s = t
        requests = self.requests
        requests.state[rid] = FINISHED
        requests.finish_s[rid] = t
        self._ended += 1
        self._window.on_finish(rid)
        self._records.append(self.requests.record(rid))

    def _land(self, rid: int, t: float) -> None:
        """A KV transfer completed: free the source copy, queue the request to join the batch."""
        requests = self.requests
        if requests.state[rid] != TRANSFERRING:   # rejected as stuck while in flight
            return
        if self._transfers.nics is not None:
            self._transfers.landed(rid)
        self._progress_s = t
        src = self._free_source_kv(rid, t)
        dest = self._insts[requests.instance[rid]]
        dest.transfers_in -= 1
        dest.cached_view = None
        requests.state[rid] = LANDED
        requests.computed[rid] = requests.input_tokens[rid]
        if self._pfx and rid in self._kv.held_on:   # vLLM caches pulled blocks on receipt
            self._kv.register(dest, rid, requests.computed[rid] // dest.block_size, t)
        dest.landed.append(rid)
        if src.waiting or src.transfer_queue:
            self._kick(src, t)
        self._kick(dest, t)

    def _free_source_kv(self, rid: int, t: float) -> InstanceState:
        """The prefill instance lets go of ``rid``'s KV (landed elsewhere, or its lease expired)."""
        requests = self.requests
        src = self._insts[requests.prefill_instance[rid]]
        nb = requests.source_blocks[rid]
        src.other_blocks -= nb
        src.cached_view = None
        requests.source_blocks[rid] = 0
        if self._pfx:
            self._kv.release(src, rid, nb, t)
        return src

    def _expire_leases(self, t: float) -> None:
        """Expire the leases due by ``t`` whose KV is still waiting to be pulled."""
        for rid in self._transfers.due_leases(t):
            self._expire_lease(rid, t)
        self._transfers.schedule_lease_check(self.requests.state)

    def _expire_lease(self, rid: int, t: float) -> None:
        """The prefill side's KV lease timed out before the decode instance started pulling it: the
        source frees its blocks and the decode instance recomputes the prompt itself, as vLLM v1 does
        for a failed remote KV load (``kv_load_failure_policy`` "recompute": the request goes back to
        WAITING with no computed tokens). Its first client token comes from that recompute."""
        requests = self.requests
        if requests.state[rid] != QUEUED_FOR_KV:   # pulled in time (or rejected as stuck)
            return
        self.num_lease_expiries += 1
        self._progress_s = t
        src = self._free_source_kv(rid, t)
        dest = self._insts[requests.instance[rid]]
        dest.transfer_queue.remove(rid)
        # the prefill's token is lost with the KV: the prompt is recomputed
        dest.decode_legs_waiting_tokens -= requests.generated[rid]
        requests.generated[rid] = 0
        requests.computed[rid] = 0
        requests.state[rid] = WAITING
        dest.enqueue_prompt(requests, rid)
        dest.cached_view = None
        if src.waiting or src.transfer_queue:
            self._kick(src, t)
        self._kick(dest, t)

    # ------------------------------------------------------------------ audit (tests, debugging)
    def audit(self) -> None:
        """Recompute every instance's KV use and resident-work sums from the per-request state
        and check them against the incremental accounting and the KV capacity (O(requests);
        for tests). Raises ``AssertionError`` naming the instance and quantity on a mismatch."""
        audit_state(self._insts, self.requests, self._now, self.config.max_num_seqs,
                    self._kv if self._pfx else None, self._transfers.nics)
