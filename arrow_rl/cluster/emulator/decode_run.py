"""Closed-form decode runs: K identical decode-only iterations planned as one event.

While an instance runs only decode sequences and none of them finishes, every iteration has the same
batch (``n`` sequences) and a context that grows by ``n`` tokens per iteration. The latency model
gives iteration j of such a run the time ``alpha + beta·(C0 + j·n)`` (``decode_time_coefficients``),
so the first k iterations take S(k) = k·alpha + beta·(C0·k + n·k(k−1)/2), and the iterations done by
a time t are the root of a quadratic. The scheduler plans a run up to the next finish (or the KV
limit), and the engine commits it in one event; routers and windows that look inside a run use
``iterations_done_by``. ``exact_stepping`` plans every iteration on its own instead (the reference
the tests compare with). The plan lives on ``InstanceState`` (``plan_*`` and ``run_*`` fields).
"""

from __future__ import annotations

import math

from arrow_rl.cluster.emulator.instance import InstanceState


def run_time(inst: InstanceState, k: int) -> float:
    """Σ of the first ``k`` iteration times of the current decode run (closed form):
    iteration j costs alpha + beta·(C0 + j·n)."""
    return k * inst.run_step_base_s + inst.run_step_per_token_s * (
        inst.run_start_context * k + inst.plan_decodes * (k * (k - 1) // 2))


def iterations_done_by(inst: InstanceState, t: float) -> int:
    """Iterations of the current run that have ended by time ``t`` (0..K): the root of the
    quadratic S(k) = dt, then a one-step correction so that it agrees with ``run_time``."""
    dt = t - inst.plan_start
    if dt <= 0:
        return 0
    K = inst.plan_iterations
    if t >= inst.plan_end:
        return K
    alpha, beta, n, C0 = inst.run_step_base_s, inst.run_step_per_token_s, inst.plan_decodes, inst.run_start_context
    if inst.done_memo_version == inst.plan_version:
        if inst.done_memo_from <= dt < inst.done_memo_until:
            return inst.done_memo_iterations
        if dt >= inst.done_memo_until:
            # the run moved on since the last question: try the next iteration first (same S(k)
            # expression, so the same largest j with S(j) ≤ dt)
            k = inst.done_memo_iterations + 1
            if k == K:
                inst.done_memo_iterations, inst.done_memo_from, inst.done_memo_until = k, inst.done_memo_until, math.inf
                return k
            hi = (k + 1) * alpha + beta * (C0 * (k + 1) + n * ((k + 1) * k // 2))
            if hi > dt:
                inst.done_memo_iterations, inst.done_memo_from, inst.done_memo_until = k, inst.done_memo_until, hi
                return k
    a2 = 0.5 * beta * n
    b1 = alpha + beta * C0 - a2
    if a2 > 0:
        k = int(2.0 * dt / (b1 + math.sqrt(b1 * b1 + 4.0 * a2 * dt)))
    else:
        k = int(dt / b1)
    if k > K:
        k = K
    # one-step correction so that k agrees with run_time: the largest j ≤ K with S(j) ≤ dt
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
    inst.done_memo_version = inst.plan_version
    inst.done_memo_iterations = k
    inst.done_memo_from = lo
    inst.done_memo_until = hi
    return k
