"""``EmulatedCluster``: a discrete-event emulator of a prefill/decode cluster of vLLM-like instances.

Each instance is stateless (Arrow §5.2: it can run both phases; a role is only a routing label) and
schedules like vLLM v1 with chunked prefill: every iteration takes the running decode sequences first
(Arrow §5.4), then chunks of running and waiting prompts up to ``max_num_batched_tokens``, at most
``max_num_seqs`` running; KV lives in blocks, and when it runs out the newest running request is
preempted by recompute. The cluster moves from event to event: an arrival, the end of an iteration
(or of a run of identical decode iterations summed in closed form), a KV transfer landing, a flip
delay ending, the end of an ``advance`` window. See docs/emulator.md for the full semantics.

Request life cycle (Arrow §4.1-4.3; docs/arrow.md):
  arrival → router.route_prefill → queued on the prefill instance → chunked prefill → first token
  (TTFT ends here, on the prefill instance, §4.2) → router.route_decode → if another instance: FCFS
  transfer queue there until it has KV room, then the KV transfer (preset.kv_transfer_time), the KV
  is freed on the source once it has landed → decode iterations → finish. Transfer and decode
  queueing are charged to TPOT (§4.3). Colocated mode skips the decode routing: requests stay put.
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
from arrow_rl.cluster.emulator.config import EmulatorConfig
from arrow_rl.cluster.emulator.instance import IDLE, RUN, SINGLE, InstanceState
from arrow_rl.perf.preset import Preset
from arrow_rl.perf.profile import InstanceProfile
from arrow_rl.workload.workload import Request, Workload

def _make_view(instance_id, role, num_prefill, prefill_tokens, prefill_tokens_sq, num_decode,
               decode_tokens, kv_used_tokens, kv_capacity_tokens, healthy) -> InstanceView:
    """Build an ``InstanceView`` without the frozen-dataclass ``__init__`` (routers ask for every
    instance's view at every routing decision, so this is the emulator's hottest allocation)."""
    v = _new(InstanceView)
    v.__dict__.update(instance_id=instance_id, role=role, num_prefill=num_prefill,
                      prefill_tokens=prefill_tokens, prefill_tokens_sq=prefill_tokens_sq,
                      num_decode=num_decode, decode_tokens=decode_tokens, kv_used_tokens=kv_used_tokens,
                      kv_capacity_tokens=kv_capacity_tokens, healthy=healthy)
    return v


_new = object.__new__
if not hasattr(InstanceView(0, Role.PREFILL, 0, 0, 0.0, 0, 0, 0, 1), "__dict__"):  # pragma: no cover
    _make_view = InstanceView  # noqa: F811  (a slotted InstanceView: use the plain constructor)

def _make_record(**fields) -> RequestRecord:
    """Build a ``RequestRecord`` (every field given) without the frozen-dataclass ``__init__``,
    which sets each field through ``object.__setattr__`` (one record per request)."""
    r = _new(RequestRecord)
    r.__dict__.update(fields)
    return r


if not hasattr(RequestRecord(0, 0.0, 1, 1), "__dict__"):  # pragma: no cover
    _make_record = RequestRecord  # noqa: F811  (a slotted RequestRecord: use the plain constructor)

def _make_request(request_id: int, arrival_s: float, input_tokens: int, output_tokens: int) -> Request:
    """A ``Request`` for a router, built like ``_make_view`` (two per request: both legs)."""
    r = _new(Request)
    r.__dict__.update(request_id=request_id, arrival_s=arrival_s, input_tokens=input_tokens,
                      output_tokens=output_tokens)
    return r


if not hasattr(Request(0, 0.0, 1, 1), "__dict__"):  # pragma: no cover
    _make_request = Request  # noqa: F811

# request states
NEW, WAIT, PREF, DEC, TQ, XFER, LANDED, DONE, REJ = range(9)
# No token, hand-off or completion anywhere for this long while requests are resident means the
# cluster is wedged (e.g. two instances each holding KV for a transfer to the other while a prompt
# thrashes by self-preemption); the resident requests are then rejected as "stuck".
STUCK_AFTER_S = 300.0
# event kinds (the heap orders equal times by kind, then by push order)
EV_XFER, EV_STEP, EV_WAKE = 0, 1, 2


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

    def __init__(self, workload: Workload, config: EmulatorConfig, router=None, seed: int = 0,
                 preset: Preset | None = None, profile: InstanceProfile | None = None) -> None:
        from arrow_rl.perf.presets import get_preset
        from arrow_rl.perf.profile import profile_instance

        if router is None:
            from arrow_rl.scheduling.simple import LeastLoadedRouter
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
        self._lat = self.preset.latency
        self._M = config.max_num_batched_tokens
        self._S = config.max_num_seqs
        self._exact = config.exact_stepping
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
        self._coef: dict[int, tuple[float, float]] = {}

        n = len(workload)
        self._N = n
        self._arr: list[float] = workload.arrival_s.tolist()
        self._in: list[int] = workload.input_tokens.tolist()
        self._out: list[int] = workload.output_tokens.tolist()
        self._st = [NEW] * n
        self._leg = [0] * n          # 0: prefill leg (no token yet), 1: decode leg
        self._comp = [0] * n         # KV tokens computed (outside the lazy decode set)
        self._gen = [0] * n          # tokens generated
        self._o = [0] * n            # decode-set offset (KV tokens − instance dec_it)
        self._fit = [0] * n          # decode-set: instance dec_it at which the last token is out
        self._blk = [0] * n          # KV blocks held on the current instance (outside the decode set)
        self._xblk = [0] * n         # KV blocks held on the prefill instance during a transfer
        self._where = [-1] * n       # instance the request lives on now
        self._pinst = [-1] * n
        self._dinst = [-1] * n
        self._ft = [math.nan] * n
        self._fin = [math.nan] * n
        self._pre = [0] * n
        self._reason: dict[int, str] = {}
        self._records: list[RequestRecord] = []
        self._ended = 0
        self._next = 0               # next arrival index
        self._heap: list[tuple[float, int, int, int, int]] = []
        self._seq = 0
        self._now = 0.0              # time of the event being processed, or the advanced-to time
        self._progress_s = 0.0       # last time a token was emitted, KV landed or a request ended
        self._t_adv = 0.0            # end of the last advance
        self.flips: list[tuple[float, int, Role]] = []
        self.num_preemptions = 0
        self.num_transfers = 0
        # window accumulators (per-instance ones live on InstanceState)
        self._w_start = 0.0
        self._w_arrivals = 0
        self._w_in: list[int] = []
        self._w_ft: list[tuple[int, float]] = []      # (instance, ttft)
        self._w_fin: list[int] = []                   # request ids finished
        self._w_rej = 0
        self.router.reset(config.num_instances)
        self._info = ClusterInfo(
            num_instances=config.num_instances, preset=self.preset.name, slo=self._slo, mode=self._mode,
            initial_roles=roles,
            extra={"max_num_batched_tokens": self._M, "max_num_seqs": self._S,
                   "kv_capacity_tokens": cap_blocks * bs, "block_size": bs,
                   "flip_delay_s": config.flip_delay_s, "router": getattr(router, "name", "?")})

    def __repr__(self) -> str:
        roles = "".join("P" if I.role is Role.PREFILL else "D" for I in self._insts)
        return (f"EmulatedCluster({self.preset.name}, {self._mode.value}, roles={roles}, now={self._now:.3f}s, "
                f"ended={self._ended}/{self._N})")

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
        return self._ended == self._N

    def profile(self, instance_id: int) -> InstanceProfile:
        self._check_id(instance_id)
        return self._profile

    def instances(self) -> list[InstanceView]:
        # routers call this for every request leg: ``_view`` and ``_completed_by``'s cache hits are
        # inlined here (same answers; ``_view`` is the reference)
        t = self._now
        out = []
        for I in self._insts:
            k = 0
            if I.plan == RUN and t > I.p_start:
                if t >= I.p_end:
                    k = I.p_K
                elif I.cb_ver == I.p_ver and I.cb_lo <= t - I.p_start < I.cb_hi:
                    k = I.cb_k
                else:
                    k = self._completed_by(I, t)
            healthy = t >= I.blocked_until
            vc = I.vc
            if vc is not None and vc[0] == k and vc[1].healthy == healthy:
                out.append(vc[1])
            else:
                v = self._fresh_view(I, I.dec_it + k, healthy)
                I.vc = (k, v)
                out.append(v)
        return out

    def instance(self, instance_id: int) -> InstanceView:
        self._check_id(instance_id)
        return self._view(self._insts[instance_id], self._now)

    def completed(self) -> list[RequestRecord]:
        return list(self._records)

    def records(self) -> list[RequestRecord]:
        """Records of every request, ended or not (unended ones have NaN times)."""
        ended = {r.request_id for r in self._records}
        out = list(self._records)
        for rid in range(self._N):
            if rid not in ended:
                out.append(self._record(rid))
        out.sort(key=lambda r: r.request_id)
        return out

    @property
    def num_ended(self) -> int:
        return self._ended

    def flip(self, instance_id: int, role: Role) -> None:
        """Relabel an instance (Arrow §5.2: resident work finishes in place, nothing migrates).

        With ``flip_delay_s`` > 0 the instance admits no new work of either role for that long."""
        self._check_id(instance_id)
        role = Role(role)
        I = self._insts[instance_id]
        if I.role is role:
            return
        I.role = role
        I.vc = None
        t = self._now
        self.flips.append((t, instance_id, role))
        delay = self.config.flip_delay_s
        if delay > 0:
            I.blocked_until = I.wake_at = t + delay
            self._push(t + delay, EV_WAKE, instance_id, 0)

    def advance(self, dt: float) -> MetricsWindow:
        """Run ``dt`` seconds of cluster time; return the metrics of [now, now + dt)."""
        if not dt > 0:
            raise ValueError(f"advance needs dt > 0, got {dt}")
        t1 = self._t_adv + dt
        self._run_until(t1)
        self._now = self._t_adv = t1
        from arrow_rl.cluster.emulator.window import close_window
        return close_window(self, t1)

    def run_until_done(self, max_time_s: float | None = None,
                       progress: Callable[[float], None] | None = None) -> list[RequestRecord]:
        """Advance until every request has ended (or ``max_time_s`` of cluster time); return records.

        ``progress(now)`` is called every ~1% of the trace's span."""
        span = max(self._arr[-1] if self._N else 0.0, 1.0)
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
        for name in ("_st", "_leg", "_comp", "_gen", "_o", "_fit", "_blk", "_xblk", "_where", "_pinst",
                     "_dinst", "_ft", "_fin", "_pre", "_records", "_heap", "flips", "_w_in", "_w_ft",
                     "_w_fin"):
            d[name] = list(d[name])
        d["_reason"] = dict(self._reason)
        d["_insts"] = [I.copy() for I in self._insts]
        d["_coef"] = self._coef  # a pure cache
        d["router"] = copy.deepcopy(self.router)
        d["rng"] = copy.deepcopy(self.rng)
        new.__dict__.update(d)
        return new

    # ------------------------------------------------------------------ internals: helpers
    def _check_id(self, instance_id: int) -> None:
        if not isinstance(instance_id, (int, np.integer)) or not 0 <= instance_id < len(self._insts):
            raise ValueError(f"unknown instance id {instance_id!r}; the cluster has instances "
                             f"0..{len(self._insts) - 1}")

    def _push(self, t: float, kind: int, a: int, b: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, kind, self._seq, a, b))

    def _coefs(self, n: int) -> tuple[float, float]:
        c = self._coef.get(n)
        if c is None:
            c = self._coef[n] = tuple(float(x) for x in self._lat.decode_time_coefficients(n))
        return c

    @staticmethod
    def _run_time(I: InstanceState, k: int) -> float:
        """Σ of the first ``k`` iteration times of the current decode run (closed form):
        iteration j costs alpha + beta·(C0 + j·n)."""
        return k * I.p_alpha + I.p_beta * (I.p_C0 * k + I.p_n * (k * (k - 1) // 2))

    @staticmethod
    def _completed_by(I: InstanceState, t: float) -> int:
        """Iterations of the current run that have ended by time ``t`` (0..K): the root of the
        quadratic S(k) = dt, then a one-step correction so that it agrees with ``_run_time``."""
        dt = t - I.p_start
        if dt <= 0:
            return 0
        K = I.p_K
        if t >= I.p_end:
            return K
        alpha, beta, n, C0 = I.p_alpha, I.p_beta, I.p_n, I.p_C0
        if I.cb_ver == I.p_ver:
            if I.cb_lo <= dt < I.cb_hi:
                return I.cb_k
            if dt >= I.cb_hi:
                # the run moved on since the last question: try the next iteration first (same S(k)
                # expression, so the same largest j with S(j) ≤ dt)
                k = I.cb_k + 1
                if k == K:
                    I.cb_k, I.cb_lo, I.cb_hi = k, I.cb_hi, math.inf
                    return k
                hi = (k + 1) * alpha + beta * (C0 * (k + 1) + n * ((k + 1) * k // 2))
                if hi > dt:
                    I.cb_k, I.cb_lo, I.cb_hi = k, I.cb_hi, hi
                    return k
        a2 = 0.5 * beta * n
        b1 = alpha + beta * C0 - a2
        if a2 > 0:
            k = int(2.0 * dt / (b1 + math.sqrt(b1 * b1 + 4.0 * a2 * dt)))
        else:
            k = int(dt / b1)
        if k > K:
            k = K
        # one-step correction so that k agrees with _run_time: the largest j ≤ K with S(j) ≤ dt
        # (S is non-decreasing); S(k) and S(k+1) are kept as the bounds of the cached answer
        hi = (k + 1) * alpha + beta * (C0 * (k + 1) + n * ((k + 1) * k // 2)) if k < K else math.inf
        while hi <= dt:
            k += 1
            hi = (k + 1) * alpha + beta * (C0 * (k + 1) + n * ((k + 1) * k // 2)) if k < K else math.inf
        lo = k * alpha + beta * (C0 * k + n * (k * (k - 1) // 2)) if k > 0 else -math.inf
        while lo > dt:
            k -= 1
            hi = lo
            lo = k * alpha + beta * (C0 * k + n * (k * (k - 1) // 2)) if k > 0 else -math.inf
        # the same k answers every dt in [S(k), S(k+1)) of this plan (routers ask at every arrival;
        # the run moves far less often)
        I.cb_ver = I.p_ver
        I.cb_k = k
        I.cb_lo = lo
        I.cb_hi = hi
        return k

    def _view(self, I: InstanceState, t: float) -> InstanceView:
        """The instance as routers see it at ``t``. Cached until the instance changes (every
        mutation clears ``I.vc``) or its running decode run completes another iteration."""
        k = 0
        if I.plan == RUN and t > I.p_start:
            k = self._completed_by(I, t)
        healthy = t >= I.blocked_until
        vc = I.vc
        if vc is not None and vc[0] == k and vc[1].healthy == healthy:
            return vc[1]
        v = self._fresh_view(I, I.dec_it + k, healthy)
        I.vc = (k, v)
        return v

    def _fresh_view(self, I: InstanceState, it: int, healthy: bool) -> InstanceView:
        n = I.n_dec
        if n:
            dec_tok = I.dec_O + n * (it + 1) + I.dl_tok
            kv = I.other_blocks + (I.db_val if it == I.db_it else I.dec_blocks(it))
        else:
            dec_tok = I.dl_tok
            kv = I.other_blocks
        return _make_view(I.id, I.role, I.pf_n, I.pf_tok, float(I.pf_sq), n + I.dl_n, dec_tok,
                          kv * self._bs, self._cap_blocks * self._bs, healthy)

    def _record(self, rid: int) -> RequestRecord:
        return _make_record(
            request_id=rid, arrival_s=self._arr[rid], input_tokens=self._in[rid],
            output_tokens=self._out[rid], prefill_instance=self._pinst[rid],
            decode_instance=self._dinst[rid], first_token_s=self._ft[rid], finish_s=self._fin[rid],
            rejected=self._st[rid] == REJ, reject_reason=self._reason.get(rid, ""),
            preemptions=self._pre[rid])

    def _target(self, i, what: str) -> int:
        if not isinstance(i, (int, np.integer)) or not 0 <= i < len(self._insts):
            raise ValueError(f"router {getattr(self.router, 'name', self.router)!r}: {what} returned "
                             f"{i!r}, not an instance id in 0..{len(self._insts) - 1}")
        return int(i)

    # ------------------------------------------------------------------ internals: event loop
    def _run_until(self, t1: float) -> None:
        heap = self._heap
        arr = self._arr
        N = self._N
        insts = self._insts
        audit = self.audit_every_event
        while True:
            if audit:
                self.audit()
            ta = arr[self._next] if self._next < N else math.inf
            th = heap[0][0] if heap else math.inf
            if ta <= th:
                if ta >= t1:
                    break
                self._now = ta
                rid = self._next
                self._next += 1
                self._arrive(rid, ta)
                continue
            if th >= t1:
                break
            t, kind, _, a, b = heapq.heappop(heap)
            self._now = t
            if kind == EV_STEP:
                I = insts[a]
                if b == I.p_ver and I.plan != IDLE:
                    self._commit(I, t)
                    if t - self._progress_s > STUCK_AFTER_S:
                        self._reject_stuck()
            elif kind == EV_XFER:
                self._land(a, t)
            else:  # EV_WAKE: a flip delay ended
                self._kick(insts[a], t)
        if not heap and self._next >= N and self._ended < N:
            self._reject_stuck()

    def _arrive(self, rid: int, t: float) -> None:
        self._w_arrivals += 1
        n_in = self._in[rid]
        self._w_in.append(n_in)
        peak = n_in + self._out[rid] - 1   # KV tokens while the last token is computed
        if n_in + self._out[rid] > self._max_len:
            self._reject(rid, f"exceeds max_model_len: input+output tokens {n_in + self._out[rid]} > "
                              f"{self._max_len}")
            return
        if -(-peak // self._bs) > self._cap_blocks:
            self._reject(rid, f"exceeds KV capacity: needs {peak} KV tokens > {self._cap_blocks * self._bs} "
                              f"on one instance")
            return
        req = _make_request(rid, t, n_in, self._out[rid])
        i = self._target(self.router.route_prefill(req, self), "route_prefill")
        I = self._insts[i]
        self._where[rid] = i
        self._pinst[rid] = i
        self._st[rid] = WAIT
        I.waiting.append(rid)
        I.pf_n += 1
        I.pf_tok += n_in
        I.pf_sq += n_in * n_in
        I.vc = None
        self._kick(I, t)

    def _reject(self, rid: int, reason: str) -> None:
        self._st[rid] = REJ
        self._reason[rid] = reason
        self._ended += 1
        self._w_rej += 1
        self._records.append(self._record(rid))

    def _reject_stuck(self) -> None:
        """Nothing can move any more (e.g. a cycle of KV transfers, each waiting for KV held by the
        other): end every resident request explicitly rather than dropping it silently, and empty
        the instances so that later arrivals start on a clean cluster."""
        for rid in range(self._N):
            if self._st[rid] not in (DONE, REJ, NEW):
                self._reject(rid, "stuck: no instance could make progress (KV transfer deadlock)")
        bs = self._bs
        for I in self._insts:
            I.running, I.pref, I.dec_heap = [], [], []
            I.waiting.clear()
            I.tq.clear()
            I.landed.clear()
            I.inflight = I.n_dec = I.dec_O = I.dec_A = I.other_blocks = 0
            I.dec_cnt = [0] * bs
            I.db_it = -1
            I.pf_n = I.pf_tok = I.pf_sq = I.dl_n = I.dl_tok = 0
            I.plan = IDLE
            I.p_ver += 1
            I.vc = None
        self._progress_s = self._now

    def _kick(self, I: InstanceState, t: float) -> None:
        """New work or freed KV at ``t``: take it into account at the next iteration boundary."""
        plan = I.plan
        if plan == IDLE:
            self._schedule(I, t)
        elif plan == RUN:
            # first boundary at or after t (the running iteration always completes)
            k = self._completed_by(I, t)
            if k < I.p_K and self._run_time(I, k) < t - I.p_start:
                k += 1
            if k >= I.p_K:
                return
            I.p_ver += 1
            I.vc = None
            if k == 0:      # nothing of the run has happened yet: plan again now
                I.plan = IDLE
                self._schedule(I, t)
                return
            I.p_K = k
            I.p_end = I.p_start + self._run_time(I, k)
            self._push(I.p_end, EV_STEP, I.id, I.p_ver)
        # SINGLE: the batch is re-formed when the iteration ends

    # ------------------------------------------------------------------ internals: decode set
    def _dec_join(self, I: InstanceState, rid: int, comp: int) -> None:
        o = comp - I.dec_it
        self._o[rid] = o
        I.n_dec += 1
        I.dec_O += o
        q, r = divmod(o, I.bs)
        I.dec_A += q
        I.dec_cnt[r] += 1
        I.db_it = -1
        fit = self._in[rid] + self._out[rid] - 1 - o
        self._fit[rid] = fit
        heapq.heappush(I.dec_heap, (fit, rid))
        self._st[rid] = DEC

    def _dec_leave(self, I: InstanceState, rid: int) -> int:
        """Remove from the lazy decode set; return the request's KV tokens now."""
        o = self._o[rid]
        I.n_dec -= 1
        I.dec_O -= o
        q, r = divmod(o, I.bs)
        I.dec_A -= q
        I.dec_cnt[r] -= 1
        I.db_it = -1
        return o + I.dec_it

    def _next_finish(self, I: InstanceState) -> int:
        heap = I.dec_heap
        st, fit = self._st, self._fit
        while heap:
            f, rid = heap[0]
            if st[rid] == DEC and fit[rid] == f and self._where[rid] == I.id:
                return f
            heapq.heappop(heap)
        raise AssertionError("decode set is empty")

    # ------------------------------------------------------------------ internals: scheduler
    def _schedule(self, I: InstanceState, t: float) -> None:
        """Form the next batch at an iteration boundary (vLLM v1 order, decode first, Arrow §5.4)
        and plan it: one iteration, a closed-form run of decode iterations, or idle."""
        bs = I.bs
        cap = I.cap_blocks
        S = self._S
        comp, gen, blk, st, n_in = self._comp, self._gen, self._blk, self._st, self._in
        I.vc = None
        admit_ok = t >= I.blocked_until
        # transferred KV that has landed joins the running batch (it already holds its blocks)
        while I.landed and len(I.running) < S:
            rid = I.landed.popleft()
            I.other_blocks -= blk[rid]
            blk[rid] = 0
            I.dl_n -= 1
            I.dl_tok -= n_in[rid] + gen[rid]
            I.running.append(rid)
            self._dec_join(I, rid, comp[rid])
        it = I.dec_it
        chunks: list[tuple[int, int]] = []
        budget = self._M - I.n_dec
        need = I.other_blocks + I.dec_blocks(it + 1)
        preempted = False
        if I.pref:
            adds = []
            for rid in I.pref:
                if budget <= 0:
                    break
                c = min(n_in[rid] + gen[rid] - comp[rid], budget)
                add = -(-(comp[rid] + c) // bs) - blk[rid]
                need += add
                chunks.append((rid, c))
                adds.append(add)
                budget -= c
            if need <= cap:
                for (rid, _), add in zip(chunks, adds):
                    blk[rid] += add
                I.other_blocks += sum(adds)
        if need > cap:
            chunks, preempted = self._schedule_under_pressure(I)
            budget = self._M - I.n_dec - sum(c for _, c in chunks)
            need = I.other_blocks + I.dec_blocks(it + 1)
        # admit waiting prompts FCFS (vLLM v1: not in a step that preempted)
        if I.waiting and not preempted and admit_ok:
            free = cap - need
            running = I.running
            while budget > 0 and I.waiting and len(running) < S:
                rid = I.waiting[0]
                c = min(n_in[rid] + gen[rid] - comp[rid], budget)
                add = -(-(comp[rid] + c) // bs) - blk[rid]
                if add > free:
                    break
                I.waiting.popleft()
                free -= add
                blk[rid] += add
                I.other_blocks += add
                running.append(rid)
                I.pref.append(rid)
                st[rid] = PREF
                chunks.append((rid, c))
                budget -= c
            need = cap - free
        # start KV pulls for queued decode legs while there is room (FCFS queue, Arrow §5.4)
        if I.tq and admit_ok:
            free = cap - need
            while I.tq and len(I.running) + I.inflight + len(I.landed) < S:
                rid = I.tq[0]
                add = -(-n_in[rid] // bs)
                if add > free:
                    break
                I.tq.popleft()
                free -= add
                blk[rid] = add
                I.other_blocks += add
                I.inflight += 1
                st[rid] = XFER
                self.num_transfers += 1
                self._push(t + self.preset.kv_transfer_time(n_in[rid]), EV_XFER, rid, 0)
        if not admit_ok and (I.waiting or I.tq) and I.wake_at != I.blocked_until:
            I.wake_at = I.blocked_until
            self._push(I.blocked_until, EV_WAKE, I.id, 0)
        # plan
        I.p_ver += 1
        I.p_start = t
        I.p_kacc = 0
        n = I.n_dec
        I.p_n = n
        if chunks:
            ptok = 0
            att = 0.0
            for rid, c in chunks:
                ptok += c
                att += c * (comp[rid] + 0.5 * c)
            ctx = I.dec_context(it) if n else 0
            dur = self._lat.iteration_time(ptok, att, n, ctx)
            I.plan = SINGLE
            I.p_chunks = chunks
            I.p_ptok = ptok
            I.p_K = 1
            I.p_end = t + dur
        elif n:
            k = self._next_finish(I) - it
            if self._exact or (preempted and (I.waiting or I.tq)):
                k = 1   # after a preemption vLLM admits waiting work again at the next step
            elif I.other_blocks + I.dec_blocks(it + k) > cap:
                lo, hi = 1, k  # largest run whose KV fits: lo fits, hi does not
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if I.other_blocks + I.dec_blocks(it + mid) <= cap:
                        lo = mid
                    else:
                        hi = mid
                k = lo
            alpha, beta = self._coefs(n)
            I.plan = RUN
            I.p_alpha = alpha
            I.p_beta = beta
            I.p_C0 = I.dec_context(it)
            I.p_K = k
            I.p_chunks = []
            I.p_ptok = 0
            I.p_end = t + self._run_time(I, k)
        else:
            I.plan = IDLE
            if preempted and I.waiting and admit_ok:
                # everything running was preempted: vLLM's next step (now) admits from waiting
                self._schedule(I, t)
            return
        self._push(I.p_end, EV_STEP, I.id, I.p_ver)

    def _schedule_under_pressure(self, I: InstanceState) -> tuple[list[tuple[int, int]], bool]:
        """The exact vLLM v1 allocation loop when KV does not fit everything (rare path).

        Decode sequences first (Arrow §5.4), then running prompts; when a request cannot get its
        blocks, the newest running request is preempted (recompute) until it fits or the request
        itself is preempted (vLLM v1 ``Scheduler.schedule``)."""
        bs = I.bs
        comp, gen, blk, st, n_in = self._comp, self._gen, self._blk, self._st, self._in
        # materialise the lazy decode set
        decs = [rid for rid in I.running if st[rid] == DEC]
        for rid in decs:
            c = self._dec_leave(I, rid)
            comp[rid] = c
            gen[rid] = c + 1 - n_in[rid]
            b = -(-c // bs)
            blk[rid] = b
            I.other_blocks += b
        I.dec_heap = []
        order = decs + list(I.pref)
        free = I.cap_blocks - I.other_blocks
        budget = self._M
        sched: dict[int, int] = {}
        preempted = False
        is_dec = set(decs)
        for rid in order:
            if budget <= 0:
                break
            if st[rid] == WAIT:      # preempted earlier in this loop
                continue
            c = 1 if rid in is_dec else min(n_in[rid] + gen[rid] - comp[rid], budget)
            need = -(-(comp[rid] + c) // bs) - blk[rid]
            ok = True
            while need > free:
                victim = I.running.pop()
                preempted = True
                if victim in sched:
                    budget += sched.pop(victim)
                free += blk[victim]
                self._preempt(I, victim, victim in is_dec)
                if victim == rid:
                    ok = False
                    break
            if not ok:
                break
            free -= need
            blk[rid] += need
            I.other_blocks += need
            sched[rid] = c
            budget -= c
        # scheduled decodes go back into the lazy set; their new block is counted by dec_blocks(it+1)
        for rid in decs:
            if st[rid] == DEC:
                I.other_blocks -= blk[rid]
                blk[rid] = 0
                self._dec_join(I, rid, comp[rid])
        chunks = [(rid, c) for rid, c in sched.items() if rid not in is_dec]
        return chunks, preempted

    def _preempt(self, I: InstanceState, rid: int, was_decode: bool) -> None:
        """Preemption by recompute: drop the KV, back to the front of the waiting queue."""
        self._pre[rid] += 1
        self.num_preemptions += 1
        I.other_blocks -= self._blk[rid]
        self._blk[rid] = 0
        old_rem = self._in[rid] + self._gen[rid] - self._comp[rid]
        self._comp[rid] = 0
        total = self._in[rid] + self._gen[rid]
        if was_decode:
            I.dl_n += 1
            I.dl_tok += total
        else:
            I.pref.remove(rid)
            if self._leg[rid] == 0:
                I.pf_tok += total - old_rem
                I.pf_sq += total * total - old_rem * old_rem
        self._st[rid] = WAIT
        I.waiting.appendleft(rid)

    # ------------------------------------------------------------------ internals: iteration end
    def _commit(self, I: InstanceState, T: float) -> None:
        """Apply the iteration(s) that end at ``T``, emit tokens, then form the next batch."""
        w0 = self._w_start
        I.vc = None
        I.w_busy += T - max(I.p_start, w0)
        n = I.p_n
        if I.plan == RUN:
            K = I.p_K
            k0 = I.p_kacc
            I.w_iters += K - k0
            I.w_dtime += self._run_time(I, K) - self._run_time(I, k0)
            I.w_dtok += n * (K - k0)
            I.dec_it += K
            I.dec_wait_since = T
            self._progress_s = T
            chunks = ()
        else:
            if n:
                I.w_iters += 1
                I.w_dtime += T - I.p_start
                I.w_dtok += n
                I.dec_it += 1
                I.dec_wait_since = T
                self._progress_s = T
            I.w_ptok += I.p_ptok
            chunks = I.p_chunks
        I.plan = IDLE
        I.p_chunks = []
        # decode sequences that emitted their last token
        heap = I.dec_heap
        st, fit, where = self._st, self._fit, self._where
        iid = I.id
        while heap and heap[0][0] <= I.dec_it:
            f, rid = heapq.heappop(heap)
            if st[rid] == DEC and fit[rid] == f and where[rid] == iid:
                self._dec_leave(I, rid)
                I.running.remove(rid)
                self._finish(rid, T)
        # prompt chunks
        first: list[int] = []
        if chunks:
            comp, gen, n_in, leg = self._comp, self._gen, self._in, self._leg
            pref_done = False
            for rid, c in chunks:
                total = n_in[rid] + gen[rid]
                old_rem = total - comp[rid]
                comp[rid] += c
                rem = old_rem - c
                if leg[rid] == 0:
                    I.pf_tok -= c
                    I.pf_sq += rem * rem - old_rem * old_rem
                if rem:
                    continue
                pref_done = True
                st[rid] = DEC  # provisional: leaves the prefill list below
                self._progress_s = T
                if leg[rid] == 0:
                    I.pf_n -= 1
                    self._ft[rid] = T
                    self._w_ft.append((iid, T - self._arr[rid]))
                    I.w_ft_n += 1
                    I.w_ft_sum += T - self._arr[rid]
                else:   # a preempted decode leg recomputed its context: its next token is out
                    I.dl_n -= 1
                    I.dl_tok -= total
                    I.w_dtok += 1
                gen[rid] += 1
                if gen[rid] >= self._out[rid]:
                    I.other_blocks -= self._blk[rid]
                    self._blk[rid] = 0
                    I.running.remove(rid)
                    st[rid] = DONE
                    leg[rid] = 1
                    self._finish(rid, T)
                elif leg[rid] == 0 and self._mode is Mode.DISAGGREGATED:
                    leg[rid] = 1
                    first.append(rid)
                else:
                    if leg[rid] == 0:
                        leg[rid] = 1
                        self._dinst[rid] = iid
                    self._to_decode_here(I, rid, T)
            if pref_done:
                I.pref = [r for r in I.pref if st[r] == PREF]
        # Arrow §4.2-4.3: the first token is out on the prefill instance; now place the decode leg
        for rid in first:
            I.vc = None   # the previous iteration changed this instance
            d = self._target(self.router.route_decode(
                _make_request(rid, self._arr[rid], self._in[rid], self._out[rid]), iid, self), "route_decode")
            self._dinst[rid] = d
            if d == iid:   # decode in place: no KV transfer (Arrow §5.2)
                self._to_decode_here(I, rid, T)
            else:
                I.running.remove(rid)
                self._xblk[rid] = self._blk[rid]   # stays counted in I.other_blocks until it lands
                self._blk[rid] = 0
                st[rid] = TQ
                D = self._insts[d]
                if D.n_dec == 0 and D.dl_n == 0:
                    D.dec_wait_since = T
                D.tq.append(rid)
                D.dl_n += 1
                D.dl_tok += self._in[rid] + self._gen[rid]
                D.vc = None
                self._where[rid] = d
                self._kick(D, T)
        self._schedule(I, T)

    def _to_decode_here(self, I: InstanceState, rid: int, T: float) -> None:
        """A request whose prompt is computed keeps decoding on this instance (it is running)."""
        if I.n_dec == 0 and I.dl_n == 0:
            I.dec_wait_since = T
        I.other_blocks -= self._blk[rid]
        self._blk[rid] = 0
        self._dec_join(I, rid, self._comp[rid])

    def _finish(self, rid: int, T: float) -> None:
        self._progress_s = T
        self._st[rid] = DONE
        self._fin[rid] = T
        self._ended += 1
        self._w_fin.append(rid)
        self._records.append(self._record(rid))

    def _land(self, rid: int, T: float) -> None:
        """A KV transfer completed: free the source copy, queue the request to join the batch."""
        if self._st[rid] != XFER:   # rejected as stuck while in flight
            return
        self._progress_s = T
        src = self._insts[self._pinst[rid]]
        src.other_blocks -= self._xblk[rid]
        src.vc = None
        self._xblk[rid] = 0
        D = self._insts[self._where[rid]]
        D.inflight -= 1
        D.vc = None
        self._st[rid] = LANDED
        self._comp[rid] = self._in[rid]
        D.landed.append(rid)
        if src.waiting or src.tq:
            self._kick(src, T)
        self._kick(D, T)

    # ------------------------------------------------------------------ audit (tests, debugging)
    def audit(self) -> None:
        """Recompute every instance's KV use and resident-work sums from the per-request state
        and check them against the incremental accounting and the KV capacity (O(requests);
        for tests). Raises ``AssertionError`` naming the instance and quantity on a mismatch."""
        bs = self._bs
        n_inst = len(self._insts)
        blocks = [0] * n_inst
        dec_blocks = [0] * n_inst
        pf = [[0, 0, 0] for _ in range(n_inst)]
        dl = [[0, 0] for _ in range(n_inst)]
        running = [set() for _ in range(n_inst)]
        for rid in range(self._N):
            s = self._st[rid]
            w = self._where[rid]
            if s in (NEW, DONE, REJ):
                continue
            I = self._insts[w]
            total = self._in[rid] + self._gen[rid]
            if s == DEC:
                c = self._o[rid] + I.dec_it
                dec_blocks[w] += -(-c // bs)
                running[w].add(rid)
                assert self._in[rid] <= c < self._in[rid] + self._out[rid] - 1, f"request {rid}: KV {c} out of range"
                continue
            if s in (WAIT, PREF):
                blocks[w] += self._blk[rid]
                if s == PREF:
                    running[w].add(rid)
                if self._leg[rid] == 0:
                    rem = total - self._comp[rid]
                    pf[w][0] += 1
                    pf[w][1] += rem
                    pf[w][2] += rem * rem
                else:
                    dl[w][0] += 1
                    dl[w][1] += total
            elif s in (TQ, XFER, LANDED):
                blocks[w] += self._blk[rid]
                dl[w][0] += 1
                dl[w][1] += total
                if s in (TQ, XFER):
                    blocks[self._pinst[rid]] += self._xblk[rid]
        for I in self._insts:
            i = I.id
            assert I.dec_blocks(I.dec_it) == dec_blocks[i], f"instance {i}: decode-set blocks drift"
            assert I.other_blocks == blocks[i], f"instance {i}: other blocks {I.other_blocks} != {blocks[i]}"
            assert [I.pf_n, I.pf_tok, I.pf_sq] == pf[i], f"instance {i}: prefill sums {pf[i]}"
            assert [I.dl_n, I.dl_tok] == dl[i], f"instance {i}: decode-leg sums {dl[i]}"
            assert set(I.running) == running[i] and len(I.running) == len(running[i]), f"instance {i}: running set"
            assert len(I.running) <= self._S, f"instance {i}: more than max_num_seqs running"
            peak = I.dec_it + (I.p_K if I.plan == RUN else (1 if I.plan == SINGLE else 0))
            assert I.other_blocks + I.dec_blocks(peak) <= I.cap_blocks, f"instance {i}: KV over capacity"
            t = self._now
            k = self._completed_by(I, t) if I.plan == RUN and t > I.p_start else 0
            assert self._view(I, t) == self._fresh_view(I, I.dec_it + k, t >= I.blocked_until), \
                f"instance {i}: cached view is stale"
