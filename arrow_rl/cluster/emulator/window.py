"""Turn the emulator's window accumulators into a ``MetricsWindow`` (the controller's observation).

Choices where the paper (§5.5) leaves room (documented in docs/emulator.md):
- Pools are the instances holding each role at the window's end; in colocated mode both pools are
  the whole cluster (roles are ignored there).
- TTFT statistics count first tokens emitted in the window, by the instance that emitted them;
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

from typing import TYPE_CHECKING

from arrow_rl.cluster.base import InstanceWindowStats, MetricsWindow, Mode, PoolStats, Role
from arrow_rl.cluster.emulator.instance import RUN, SINGLE

if TYPE_CHECKING:
    from arrow_rl.cluster.emulator.cluster import EmulatedCluster


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


def close_window(c: "EmulatedCluster", t1: float) -> MetricsWindow:
    """Account the running plans up to ``t1``, build the window [w_start, t1), reset accumulators."""
    t0 = c._w_start
    dur = t1 - t0
    slo = c._slo
    prof = c._profile
    insts = c._insts
    # iterations of runs in progress that ended by t1 belong to this window
    for I in insts:
        if I.plan == RUN and I.p_start < t1:
            k = c._completed_by(I, t1)
            if k > I.p_kacc:
                I.w_iters += k - I.p_kacc
                I.w_dtime += c._run_time(I, k) - c._run_time(I, I.p_kacc)
                I.w_dtok += I.p_n * (k - I.p_kacc)
                I.dec_wait_since = I.p_start + c._run_time(I, k)
                I.p_kacc = k
            I.w_busy += t1 - max(I.p_start, t0)
        elif I.plan == SINGLE and I.p_start < t1:
            I.w_busy += t1 - max(I.p_start, t0)

    views = [c._view(I, t1) for I in insts]
    # per-request window facts
    ttft_by_inst: dict[int, list[float]] = {}
    for iid, ttft in c._w_ft:
        ttft_by_inst.setdefault(iid, []).append(ttft)
    tpot_by_inst: dict[int, list[float]] = {}
    finished = len(c._w_fin)
    within = ttft_viol = tpot_viol = 0
    out_tokens = []
    for rid in c._w_fin:
        ttft = c._ft[rid] - c._arr[rid]
        n_out = c._out[rid]
        out_tokens.append(n_out)
        iid = c._dinst[rid] if c._dinst[rid] >= 0 else c._pinst[rid]
        t_ok = ttft <= slo.ttft_s
        p_ok = True
        if n_out > 1:
            tpot = (c._fin[rid] - c._ft[rid]) / (n_out - 1)
            tpot_by_inst.setdefault(iid, []).append(tpot)
            p_ok = tpot <= slo.tpot_s
        ttft_viol += not t_ok
        tpot_viol += not p_ok
        within += t_ok and p_ok

    inst_stats = []
    pending_misses = 0
    now_ttft = slo.ttft_s
    for I, v in zip(insts, views):
        itl = I.w_dtime / I.w_iters if I.w_iters else 0.0
        if I.w_iters:
            dload = itl / slo.tpot_s
        elif v.num_decode:
            dload = (t1 - max(t0, I.dec_wait_since)) / slo.tpot_s
        else:
            dload = 0.0
        pload = prof.prefill_time_sum(I.pf_n, I.pf_tok, I.pf_sq) / slo.ttft_s
        fts = ttft_by_inst.get(I.id, [])
        inst_stats.append(InstanceWindowStats(
            instance_id=I.id, role=I.role, ttft_mean=_mean(fts), itl_mean=itl,
            prefill_tokens_computed=I.w_ptok, decode_tokens_generated=I.w_dtok,
            busy_fraction=min(1.0, I.w_busy / dur) if dur > 0 else 0.0,
            waiting=len(I.waiting) + len(I.tq) + len(I.landed), running=len(I.running),
            kv_usage=v.kv_usage, prefill_load=pload, decode_load=dload))
        # queued prompts whose waiting so far + predicted prefill queue time already misses TTFT
        if I.pf_n:
            cum = 0.0
            for rid in list(I.pref) + list(I.waiting):
                rem = c._in[rid] + c._gen[rid] - c._comp[rid]
                cum += prof.prefill_time(rem)
                if c._leg[rid] == 0 and (t1 - c._arr[rid]) + cum > now_ttft:
                    pending_misses += 1

    def pool(role: Role | None) -> PoolStats:
        members = [s for s in inst_stats if role is None or s.role is role]
        ids = {s.instance_id for s in members}
        fts = [x for i in ids for x in ttft_by_inst.get(i, [])]
        tps = [x for i in ids for x in tpot_by_inst.get(i, [])]
        iters = sum(insts[i].w_iters for i in ids)
        dtime = sum(insts[i].w_dtime for i in ids)
        if role is Role.DECODE:
            load = _mean([s.decode_load for s in members])
        elif role is Role.PREFILL:
            load = _mean([s.prefill_load for s in members])
        else:
            load = 0.0
        return PoolStats(
            num_instances=len(members), ttft_mean=_mean(fts), ttft_p90=_p90(fts),
            itl_mean=dtime / iters if iters else 0.0, tpot_mean=_mean(tps), tpot_p90=_p90(tps),
            first_tokens=len(fts), finished=sum(1 for rid in c._w_fin
                                                 if (c._dinst[rid] if c._dinst[rid] >= 0 else c._pinst[rid]) in ids),
            waiting=sum(s.waiting for s in members), running=sum(s.running for s in members),
            queued_prefill_tokens=sum(views[i].prefill_tokens for i in ids),
            kv_usage_mean=_mean([s.kv_usage for s in members]), load=load)

    if c._mode is Mode.COLOCATED:
        # roles are ignored: both pools are the whole cluster, each with its own §5.5 load
        p_all = pool(None)
        prefill = PoolStats(**{**p_all.__dict__, "load": _mean([s.prefill_load for s in inst_stats])})
        decode = PoolStats(**{**p_all.__dict__, "load": _mean([s.decode_load for s in inst_stats])})
    else:
        prefill = pool(Role.PREFILL)
        decode = pool(Role.DECODE)

    w_in = c._w_in
    window = MetricsWindow(
        start_s=t0, end_s=t1, prefill=prefill, decode=decode, instances=tuple(inst_stats),
        arrivals=c._w_arrivals,
        arrival_input_tokens_mean=_mean(w_in), arrival_input_tokens_p90=_p90(w_in),
        arrival_output_tokens_mean=_mean(out_tokens), finished=finished, finished_within_slo=within,
        ttft_violations=ttft_viol, tpot_violations=tpot_viol, rejected=c._w_rej,
        pending_predicted_ttft_misses=pending_misses)
    # reset the accumulators for the next window
    c._w_start = t1
    c._w_arrivals = 0
    c._w_in = []
    c._w_ft = []
    c._w_fin = []
    c._w_rej = 0
    for I in insts:
        I.reset_window()
    return window
