"""``audit``: recompute an emulator's incremental accounting from the request table and compare.

The engine keeps per-instance sums (KV blocks, resident prefill and decode-leg work, the lazy
decode set) up to date incrementally; the audit rebuilds each of them from every request's state
and checks the KV capacity, ``max_num_seqs``, prefix-cache reference counts, NIC accounting and
the cached router views. O(requests): for tests (``EmulatedCluster.audit_every_event``) and
debugging, never on the hot path.
"""

from __future__ import annotations

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
    n_inst = len(insts)
    blocks = [0] * n_inst
    dec_blocks = [0] * n_inst
    pf = [[0, 0, 0] for _ in range(n_inst)]
    dl = [[0, 0] for _ in range(n_inst)]
    running = [set() for _ in range(n_inst)]
    for rid in range(requests.num):
        s = requests.state[rid]
        w = requests.instance[rid]
        if s in (NEW, FINISHED, REJECTED):
            continue
        inst = insts[w]
        total = requests.input_tokens[rid] + requests.generated[rid]
        if s == DECODING:
            c = requests.decode_offset[rid] + inst.decode_iterations
            dec_blocks[w] += -(-c // inst.block_size)
            running[w].add(rid)
            # in − 1: a pulled KV before the decode instance's first step recomputes the last token
            assert requests.input_tokens[rid] - 1 <= c < requests.input_tokens[rid] + requests.output_tokens[rid] - 1, \
                f"request {rid}: KV {c} out of range"
            continue
        if s in (WAITING, PREFILLING):
            blocks[w] += requests.blocks[rid]
            if s == PREFILLING:
                running[w].add(rid)
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
    dup = [0] * n_inst
    if kv is not None:
        dup = kv.check(insts)
    if nics is not None:
        nics.check()
        for rid in nics.active:
            assert requests.state[rid] == TRANSFERRING, f"request {rid}: sending KV but not in transfer"
    for inst in insts:
        i = inst.id
        assert inst.decode_set_blocks(inst.decode_iterations) == dec_blocks[i], f"instance {i}: decode-set blocks drift"
        assert inst.other_blocks == blocks[i] - dup[i], \
            f"instance {i}: other blocks {inst.other_blocks} != {blocks[i]} - {dup[i]} shared"
        assert [inst.prefill_legs, inst.prefill_tokens_left, inst.prefill_tokens_left_sq] == pf[i], \
            f"instance {i}: prefill sums {pf[i]}"
        assert [inst.decode_legs_waiting, inst.decode_legs_waiting_tokens] == dl[i], f"instance {i}: decode-leg sums {dl[i]}"
        assert set(inst.running) == running[i] and len(inst.running) == len(running[i]), \
            f"instance {i}: running set"
        assert len(inst.running) <= max_num_seqs, f"instance {i}: more than max_num_seqs running"
        ahead = inst.plan_iterations if inst.plan == DECODE_RUN else (1 if inst.plan == ONE_ITERATION else 0)
        peak = inst.decode_iterations + ahead
        assert inst.other_blocks + inst.decode_set_blocks(peak) <= inst.capacity_blocks, f"instance {i}: KV over capacity"
        k = iterations_done_by(inst, now) if inst.plan == DECODE_RUN and now > inst.plan_start else 0
        assert view_at(inst, now) == fresh_view(inst, inst.decode_iterations + k, now >= inst.blocked_until), \
            f"instance {i}: cached view is stale"
