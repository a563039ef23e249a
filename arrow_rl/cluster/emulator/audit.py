"""``audit``: recompute an emulator's incremental accounting from the request table and compare.

The engine keeps per-instance sums (KV blocks, resident prefill and decode-leg work, the lazy
decode set) up to date incrementally; the audit rebuilds each of them from every request's state
and checks the KV capacity, ``max_num_seqs``, the waiting line's order, prefix-cache reference counts, NIC accounting and
the cached router views. O(requests): for tests (``EmulatedCluster.audit_every_event``) and
debugging, never on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

from arrow_rl.cluster.emulator.decode_run import iterations_done_by
from arrow_rl.cluster.emulator.instance import DECODE_RUN, ONE_ITERATION, InstanceState
from arrow_rl.cluster.emulator.kv_cache import KvCacheManager
from arrow_rl.cluster.emulator.requests import (
    DECODING, FINISHED, LANDED, NEW, PREFILLING, QUEUED_FOR_KV, REJECTED, TRANSFERRING, WAITING, RequestTable)
from arrow_rl.cluster.emulator.transfers import SharedNics
from arrow_rl.cluster.emulator.views import fresh_view, view_at


def audit_state(insts: list[InstanceState], requests: RequestTable, now: float, max_num_seqs: int,
                kv: KvCacheManager | None, nics: SharedNics | None) -> None:
    """Check every instance of a cluster at time ``now`` against its requests (``kv``: the prefix
    cache holdings when prefix caching is on; ``nics``: the shared-NIC model when it is on).
    Raises ``AssertionError`` naming the instance or request and the quantity that drifted."""
    sums = _recount(insts, requests)
    dup = [0] * len(insts)
    if kv is not None:
        dup = kv.check(insts)
    if nics is not None:
        nics.check()
        for rid in nics.active:
            assert requests.state[rid] == TRANSFERRING, f"request {rid}: sending KV but not in transfer"
    for inst in insts:
        _check_instance(inst, sums, dup[inst.id], now, max_num_seqs)
        _check_waiting_line(inst, requests)


def _check_waiting_line(inst: InstanceState, requests: RequestTable) -> None:
    """``waiting`` and ``transfer_queue`` are each in waiting-line order (the planner merges them
    by ``queue_order``, which is only FCFS if both are sorted)."""
    order = requests.queue_order
    for name, queue in (("waiting", inst.waiting), ("transfer_queue", inst.transfer_queue)):
        places = [order[rid] for rid in queue]
        assert places == sorted(places), f"instance {inst.id}: {name} out of waiting-line order"


@dataclass
class _Sums:
    """Per-instance sums rebuilt from the request table, indexed by instance id."""

    blocks: list[int]               # KV blocks outside the decode set (shared prefix blocks once per request)
    decode_blocks: list[int]        # KV blocks of the decode set
    prefill: list[list[int]]        # prefill legs: [count, tokens still to compute, Σ tokens still to compute²]
    decode_legs: list[list[int]]    # decode legs outside the decode set: [count, Σ input + generated]
    running: list[set[int]]


def _recount(insts: list[InstanceState], requests: RequestTable) -> _Sums:
    """Every resident request's KV blocks, resident work and place in the running batch, summed by
    instance."""
    n_inst = len(insts)
    sums = _Sums([0] * n_inst, [0] * n_inst, [[0, 0, 0] for _ in range(n_inst)], [[0, 0] for _ in range(n_inst)],
                 [set() for _ in range(n_inst)])
    blocks, pf, dl = sums.blocks, sums.prefill, sums.decode_legs
    for rid in range(requests.num):
        s = requests.state[rid]
        w = requests.instance[rid]
        if s in (NEW, FINISHED, REJECTED):
            continue
        inst = insts[w]
        total = requests.input_tokens[rid] + requests.generated[rid]
        if s == DECODING:
            c = requests.decode_offset[rid] + inst.decode_iterations
            sums.decode_blocks[w] += -(-c // inst.block_size)
            sums.running[w].add(rid)
            # in − 1: a pulled KV before the decode instance's first step recomputes the last token
            assert requests.input_tokens[rid] - 1 <= c < requests.input_tokens[rid] + requests.output_tokens[rid] - 1, \
                f"request {rid}: KV {c} out of range"
            continue
        if s in (WAITING, PREFILLING):
            blocks[w] += requests.blocks[rid]
            if s == PREFILLING:
                sums.running[w].add(rid)
            if requests.leg[rid] == 0:
                rem = total - requests.computed[rid]
                pf[w][0] += 1
                pf[w][1] += rem
                pf[w][2] += rem * rem
            else:
                dl[w][0] += 1
                dl[w][1] += total
        elif s in (QUEUED_FOR_KV, TRANSFERRING, LANDED):
            blocks[w] += requests.blocks[rid]
            dl[w][0] += 1
            dl[w][1] += total
            if s in (QUEUED_FOR_KV, TRANSFERRING):
                blocks[requests.prefill_instance[rid]] += requests.source_blocks[rid]
    return sums


def _check_instance(inst: InstanceState, sums: _Sums, dup: int, now: float, max_num_seqs: int) -> None:
    """``inst``'s incremental accounting against the recounted ``sums`` (``dup``: its prefix
    blocks shared by several requests), its limits and its cached view."""
    i = inst.id
    assert inst.decode_set_blocks(inst.decode_iterations) == sums.decode_blocks[i], \
        f"instance {i}: decode-set blocks drift"
    assert inst.other_blocks == sums.blocks[i] - dup, \
        f"instance {i}: other blocks {inst.other_blocks} != {sums.blocks[i]} - {dup} shared"
    assert [inst.prefill_legs, inst.prefill_tokens_left, inst.prefill_tokens_left_sq] == sums.prefill[i], \
        f"instance {i}: prefill sums {sums.prefill[i]}"
    assert [inst.decode_legs_waiting, inst.decode_legs_waiting_tokens] == sums.decode_legs[i], \
        f"instance {i}: decode-leg sums {sums.decode_legs[i]}"
    assert set(inst.running) == sums.running[i] and len(inst.running) == len(sums.running[i]), \
        f"instance {i}: running set"
    assert len(inst.running) <= max_num_seqs, f"instance {i}: more than max_num_seqs running"
    ahead = inst.plan_iterations if inst.plan == DECODE_RUN else (1 if inst.plan == ONE_ITERATION else 0)
    peak = inst.decode_iterations + ahead
    assert inst.other_blocks + inst.decode_set_blocks(peak) <= inst.capacity_blocks, f"instance {i}: KV over capacity"
    k = iterations_done_by(inst, now) if inst.plan == DECODE_RUN and now > inst.plan_start else 0
    assert view_at(inst, now) == fresh_view(inst, inst.decode_iterations + k, now >= inst.blocked_until), \
        f"instance {i}: cached view is stale"
