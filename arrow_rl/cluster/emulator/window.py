"""The metrics window (the controller's observation): accumulated through hooks, closed into a ``MetricsWindow``.

Choices where the paper (§5.5) leaves room (documented in docs/emulator.md):
- Pools are the instances holding each role at the window's end; in colocated mode both pools are
  the whole cluster (roles are ignored there).
- TTFT statistics count the client's first tokens seen in the window (disaggregated: from the
  decode instance's first step after the KV transfer), by the instance that computed the prompt;
  TPOT statistics count requests that finished in the window, by the instance they finished on.
- ITL of an instance = total time of its iterations that carried decode tokens / their number
  (mixed prefill+decode iterations included: that is exactly the prefill stall a decode sees).
- Arrow §5.5 prefill load of an instance = Σ_{rp ∈ P_i} T(rp, i) / SLO_TTFT at the window's end,
  T from the §5.2 profile over the prompt tokens still to compute.
- Arrow §5.5 decode load = mean token latency (ITL) in the window / SLO_TPOT. An instance with no
  decode iteration in the window counts 0 if it holds no decode work; if it holds decode work that
  produced nothing (queued for KV, in transfer, stalled), its load is the stall so far
  (window end − max(window start, last decode iteration or arrival of its first decode work))
  / SLO_TPOT, a lower bound on the latency of its next token.
- Pool loads LP / LD = the mean of the instance loads over the pool (§5.5).
"""

from __future__ import annotations

from typing import NamedTuple

from arrow_rl.cluster.base import SLO, InstanceView, InstanceWindowStats, MetricsWindow, Mode, PoolStats, Role
from arrow_rl.cluster.emulator.decode_run import iterations_done_by, run_time
from arrow_rl.cluster.emulator.instance import DECODE_RUN, ONE_ITERATION, InstanceState
from arrow_rl.cluster.emulator.requests import PREFILL_LEG, RequestTable
from arrow_rl.perf.profile import InstanceProfile


_new = object.__new__


def _frozen(cls, **fields):
    """Build a frozen dataclass given every field (in field order) without its ``__init__``,
    which sets each field through ``object.__setattr__`` (a dozen of them per window)."""
    obj = _new(cls)
    obj.__dict__.update(fields)
    return obj


# ``_frozen`` and ``close`` fill the window dataclasses' ``__dict__``: they must be plain (not slotted)
assert all(hasattr(c, "__dict__") and "__slots__" not in c.__dict__
           for c in (InstanceWindowStats, PoolStats, MetricsWindow)), "window dataclasses must not be slotted"


def _p90(values: list[float]) -> float:
    """90th percentile with linear interpolation (numpy's default), without numpy's overhead."""
    n = len(values)
    if n == 0:
        return 0.0
    if n == 1:
        return float(values[0])
    a = sorted(values)
    pos = 0.9 * (n - 1)
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    return float(a[lo] + (a[hi] - a[lo]) * (pos - lo))


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


class WindowAccumulator:
    """Cluster-wide facts of the current window, fed by the engine through its ``on_*`` hooks.

    Per-instance accumulators (iterations, decode time, tokens, busy time, prefix-cache lookups) are
    the ``w_*`` fields of ``InstanceState``, which the engine updates where it commits iterations."""

    def __init__(self) -> None:
        self.start_s = 0.0
        self.reset(0.0)

    def reset(self, start_s: float) -> None:
        self.start_s = start_s
        self.arrivals = 0
        self.arrival_input_tokens: list[int] = []
        self.first_tokens: list[tuple[int, float]] = []            # (prefill instance, TTFT)
        self.finished: list[int] = []                              # request ids
        self.rejected = 0

    def copy(self) -> "WindowAccumulator":
        new = WindowAccumulator.__new__(WindowAccumulator)
        new.__dict__.update(self.__dict__)
        new.arrival_input_tokens = list(self.arrival_input_tokens)
        new.first_tokens = list(self.first_tokens)
        new.finished = list(self.finished)
        return new

    def on_arrival(self, input_tokens: int) -> None:
        self.arrivals += 1
        self.arrival_input_tokens.append(input_tokens)

    def on_first_token(self, prefill_instance: int, ttft_s: float) -> None:
        """The client saw a first token; windows attribute it to the instance that computed the prompt."""
        self.first_tokens.append((prefill_instance, ttft_s))

    def on_finish(self, rid: int) -> None:
        """A request finished (``close`` reads its times from the request table)."""
        self.finished.append(rid)

    def on_reject(self) -> None:
        self.rejected += 1

    def count_plans_in_progress(self, insts: list[InstanceState], t1: float) -> list[tuple[InstanceState, float]]:
        """At the window's end ``t1``: count the iterations of the plans in progress that ended by
        ``t1`` (and the busy time up to ``t1``) on their instances. Returns ``(instance, time)`` for
        each decode run whose first step (which emits the first token of sequences that joined
        from a transfer) ended in this window: the engine emits those tokens."""
        t0 = self.start_s
        firsts = []
        for inst in insts:
            if inst.plan == DECODE_RUN and inst.plan_start < t1:
                k = iterations_done_by(inst, t1)
                counted = inst.plan_iterations_counted
                if k > counted:
                    inst.w_decode_iterations += k - counted
                    inst.w_decode_time_s += run_time(inst, k) - run_time(inst, counted)
                    inst.w_decode_tokens += inst.plan_decodes * (k - counted)
                    inst.decode_stall_since = inst.plan_start + run_time(inst, k)
                    if inst.awaiting_first_token and counted == 0:
                        firsts.append((inst, inst.plan_start + run_time(inst, 1)))
                    inst.plan_iterations_counted = k
                inst.w_busy_s += t1 - max(inst.plan_start, t0)
            elif inst.plan == ONE_ITERATION and inst.plan_start < t1:
                inst.w_busy_s += t1 - max(inst.plan_start, t0)
        return firsts

    def close(self, t1: float, insts: list[InstanceState], views: list[InstanceView], slo: SLO,
              profile: InstanceProfile, mode: Mode, requests: RequestTable) -> MetricsWindow:
        """Build the window [start_s, t1) and start the next one. ``views`` are the instances at
        ``t1``; ``requests`` gives the finished requests' times and the queued prompts' work."""
        t0 = self.start_s
        outcomes = self._outcomes(slo, requests)
        inst_stats, pending_misses = _instance_stats(t0, t1, insts, views, slo, profile, requests,
                                                     outcomes.ttft_by_inst)

        def pool(role: Role | None) -> PoolStats:
            return _pool_stats(role, inst_stats, insts, views, outcomes)

        if mode is Mode.COLOCATED:
            # roles are ignored: both pools are the whole cluster, each with its own §5.5 load
            p_all = pool(None)
            prefill = _frozen(PoolStats, **{**p_all.__dict__, "load": _mean([s.prefill_load for s in inst_stats])})
            decode = _frozen(PoolStats, **{**p_all.__dict__, "load": _mean([s.decode_load for s in inst_stats])})
        else:
            prefill = pool(Role.PREFILL)
            decode = pool(Role.DECODE)
        mixed = pool(Role.MIXED) if mode is not Mode.COLOCATED and any(inst.role is Role.MIXED for inst in insts) \
            else PoolStats()

        w_in = self.arrival_input_tokens
        window = _frozen(
            MetricsWindow, start_s=t0, end_s=t1, prefill=prefill, decode=decode, instances=tuple(inst_stats),
            arrivals=self.arrivals,
            arrival_input_tokens_mean=_mean(w_in), arrival_input_tokens_p90=_p90(w_in),
            finished_output_tokens_mean=_mean(outcomes.out_tokens), finished=len(self.finished),
            finished_within_slo=outcomes.within, ttft_violations=outcomes.ttft_violations,
            tpot_violations=outcomes.tpot_violations, rejected=self.rejected,
            pending_predicted_ttft_misses=pending_misses,
            prefix_cache_query_tokens=sum(inst.w_prefix_query_tokens for inst in insts),
            prefix_cache_hit_tokens=sum(inst.w_prefix_hit_tokens for inst in insts), mixed=mixed)
        # reset the accumulators for the next window
        self.reset(t1)
        for inst in insts:
            inst.reset_window()
        return window

    def _outcomes(self, slo: SLO, requests: RequestTable) -> "_Outcomes":
        """The window's first tokens and finished requests, by instance, against ``slo``."""
        ttft_by_inst: dict[int, list[float]] = {}
        for iid, ttft in self.first_tokens:
            ttft_by_inst.setdefault(iid, []).append(ttft)
        tpot_by_inst: dict[int, list[float]] = {}
        within = ttft_viol = tpot_viol = 0
        out_tokens = []
        first_token_s, finish_s = requests.first_token_s, requests.finish_s
        finished_on = []
        for rid in self.finished:
            ttft = first_token_s[rid] - requests.arrival_s[rid]
            n_out = requests.output_tokens[rid]
            out_tokens.append(n_out)
            d = requests.decode_instance[rid]
            iid = d if d >= 0 else requests.prefill_instance[rid]
            finished_on.append(iid)
            t_ok = ttft <= slo.ttft_s
            p_ok = True
            if n_out > 1:
                tpot = (finish_s[rid] - first_token_s[rid]) / (n_out - 1)
                tpot_by_inst.setdefault(iid, []).append(tpot)
                p_ok = tpot <= slo.tpot_s
            ttft_viol += not t_ok
            tpot_viol += not p_ok
            within += t_ok and p_ok
        return _Outcomes(ttft_by_inst, tpot_by_inst, finished_on, out_tokens, within, ttft_viol, tpot_viol)


class _Outcomes(NamedTuple):
    """What the requests of a window did (``WindowAccumulator._outcomes``)."""

    ttft_by_inst: dict[int, list[float]]   # TTFTs of the first tokens seen, by prefill instance
    tpot_by_inst: dict[int, list[float]]   # TPOTs of the finished requests, by the instance they finished on
    finished_on: list[int]                 # the instance each finished request finished on
    out_tokens: list[int]                  # the output tokens of each finished request
    within: int                            # finished requests within both SLOs
    ttft_violations: int
    tpot_violations: int


def _instance_stats(t0: float, t1: float, insts: list[InstanceState], views: list[InstanceView], slo: SLO,
                    profile: InstanceProfile, requests: RequestTable, ttft_by_inst: dict[int, list[float]]
                    ) -> tuple[list[InstanceWindowStats], int]:
    """Each instance's stats of the window [t0, t1), with its Arrow §5.5 prefill and decode loads,
    and the number of queued prompts whose TTFT is predicted to miss the SLO already."""
    inst_stats = []
    pending_misses = 0
    now_ttft = slo.ttft_s
    tpot_slo = slo.tpot_s
    dur = t1 - t0
    # the profile's formulas inlined when it is the plain InstanceProfile (the same expressions)
    plain_prof = type(profile) is InstanceProfile
    pa, pb, pc = (profile.prefill_a, profile.prefill_b, profile.prefill_c) if plain_prof else (0.0, 0.0, 0.0)
    empty: list[float] = []
    for inst, v in zip(insts, views):
        iters = inst.w_decode_iterations
        itl = inst.w_decode_time_s / iters if iters else 0.0
        if iters:
            dload = itl / tpot_slo
        elif v.num_decode:
            dload = (t1 - max(t0, inst.decode_stall_since)) / tpot_slo
        else:
            dload = 0.0
        if plain_prof:   # profile.prefill_time_sum(legs, tokens, tokens_sq)
            pload = (pa * inst.prefill_tokens_left_sq + pb * inst.prefill_tokens_left
                     + pc * inst.prefill_legs) / now_ttft
        else:
            pload = profile.prefill_time_sum(inst.prefill_legs, inst.prefill_tokens_left,
                                             inst.prefill_tokens_left_sq) / now_ttft
        fts = ttft_by_inst.get(inst.id, empty)
        cap = v.kv_capacity_tokens
        q = inst.w_prefix_query_tokens
        st = _new(InstanceWindowStats)   # the fields in order, as _frozen would store them
        d = st.__dict__
        d["instance_id"] = inst.id
        d["role"] = inst.role
        d["ttft_mean"] = float(sum(fts) / len(fts)) if fts else 0.0   # _mean
        d["itl_mean"] = itl
        d["prefill_tokens_computed"] = inst.w_prefill_tokens
        d["decode_tokens_generated"] = inst.w_decode_tokens
        d["busy_fraction"] = min(1.0, inst.w_busy_s / dur) if dur > 0 else 0.0
        d["waiting"] = len(inst.waiting) + len(inst.transfer_queue) + len(inst.landed)
        d["running"] = len(inst.running)
        d["kv_usage"] = v.kv_used_tokens / cap if cap else 0.0   # InstanceView.kv_usage
        d["prefill_load"] = pload
        d["decode_load"] = dload
        d["prefix_cache_hit_rate"] = inst.w_prefix_hit_tokens / q if q else 0.0
        inst_stats.append(st)
        if inst.prefill_legs:
            pending_misses += _predicted_ttft_misses(inst, t1, now_ttft, profile, requests)
    return inst_stats, pending_misses


def _predicted_ttft_misses(inst: InstanceState, t1: float, ttft_slo: float, profile: InstanceProfile,
                           requests: RequestTable) -> int:
    """Queued prompts of ``inst`` whose waiting so far + predicted prefill queue time (the §5.2
    profile over the prompt tokens still to compute ahead of them, and their own) already misses
    the TTFT SLO at ``t1``."""
    plain_prof = type(profile) is InstanceProfile
    pa, pb, pc = (profile.prefill_a, profile.prefill_b, profile.prefill_c) if plain_prof else (0.0, 0.0, 0.0)
    n_in, gen, comp, leg, arrival = (requests.input_tokens, requests.generated, requests.computed,
                                     requests.leg, requests.arrival_s)
    misses = 0
    cum = 0.0
    for queue in (inst.prefilling, inst.waiting):
        for rid in queue:
            rem = n_in[rid] + gen[rid] - comp[rid]
            cum += pa * rem * rem + pb * rem + pc if plain_prof else profile.prefill_time(rem)
            if leg[rid] == PREFILL_LEG and (t1 - arrival[rid]) + cum > ttft_slo:
                misses += 1
    return misses


def _pool_stats(role: Role | None, inst_stats: list[InstanceWindowStats], insts: list[InstanceState],
                views: list[InstanceView], outcomes: _Outcomes) -> PoolStats:
    """The window's stats of the instances holding ``role`` (None: every instance); the §5.5 pool
    load is the mean of its instances' loads (the tighter of the two on a MIXED instance)."""
    members = inst_stats if role is None else [s for s in inst_stats if s.role is role]
    ids = {s.instance_id for s in members}   # float sums below run in this set's order
    empty: list[float] = []
    fts = [x for i in ids for x in outcomes.ttft_by_inst.get(i, empty)]
    tps = [x for i in ids for x in outcomes.tpot_by_inst.get(i, empty)]
    dtime = sum(insts[i].w_decode_time_s for i in ids)
    iters = waiting = running = queued = 0
    for s in members:   # integer sums: any order
        i = s.instance_id
        iters += insts[i].w_decode_iterations
        waiting += s.waiting
        running += s.running
        queued += views[i].prefill_tokens
    if role is Role.DECODE:
        load = _mean([s.decode_load for s in members])
    elif role is Role.PREFILL:
        load = _mean([s.prefill_load for s in members])
    elif role is Role.MIXED:   # both SLOs bind on a MIXED instance: the tighter of its two loads
        load = _mean([max(s.prefill_load, s.decode_load) for s in members])
    else:
        load = 0.0
    return _frozen(
        PoolStats, num_instances=len(members), ttft_mean=_mean(fts), ttft_p90=_p90(fts),
        itl_mean=dtime / iters if iters else 0.0, tpot_mean=_mean(tps), tpot_p90=_p90(tps),
        first_tokens=len(fts), finished=sum(1 for i in outcomes.finished_on if i in ids),
        waiting=waiting, running=running, queued_prefill_tokens=queued,
        kv_usage_mean=_mean([s.kv_usage for s in members]), load=load)
