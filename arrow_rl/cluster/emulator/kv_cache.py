"""The KV-cache manager's cluster-wide side: which prefix-cache blocks each request holds, where.

Block counting itself is per instance and incremental (``InstanceState.other_blocks`` plus the lazy
decode set's ``decode_set_blocks``); each instance's cached blocks, reference counts and LRU
eviction are its ``PrefixCache`` (prefix_cache.py, after vLLM v1's ``KVCacheManager``). This module
ties the two to requests, with the calls the scheduler and the engine make at each step of a
request's KV life:

- ``plan_view``: the scheduler's what-if view for one step (``PrefixPlanView``): looks a waiting
  prompt's prefix up and tells how many blocks its first chunk needs, as if the step's earlier
  admissions (or preemptions) had happened, without changing the cache;
- ``admit``: the engine applies a planned admission: take the hit blocks, allocate the first chunk's
  (only requests with nothing computed are looked up);
- ``pull``: a decode leg starts pulling its KV: take the prompt blocks cached here, pull the rest;
- ``register``: a chunk was computed (or pulled KV landed): cache its full keyed blocks;
- ``release``: the request's KV left the instance (preempted, transferred, lease expired);
- ``release_finished``: it finished: cache what it computed (its output too) and free the rest.

Only workloads that carry prefixes pay for any of it (``EmulatedCluster`` calls these only when
prefix caching is on and the workload has prefix ids).
"""

from __future__ import annotations

from arrow_rl.cluster.emulator.decode_run import iterations_done_by
from arrow_rl.cluster.emulator.instance import DECODE_RUN, InstanceState
from arrow_rl.cluster.emulator.requests import ENDED, NEW, RequestTable
from arrow_rl.workload.workload import Workload


def kv_blocks_in_use(inst: InstanceState, t: float) -> int:
    """KV blocks in use on ``inst`` at ``t`` (a decode run in progress included)."""
    k = iterations_done_by(inst, t) if inst.plan == DECODE_RUN and t > inst.plan_start else 0
    return inst.other_blocks + inst.decode_set_blocks(inst.decode_iterations + k)


class KvCacheManager:
    """Per-request prefix-cache holdings and the run's hit counters."""

    def __init__(self, workload: Workload, requests: RequestTable, block_size: int) -> None:
        self.workload = workload
        self.requests = requests
        self.block_size = block_size
        self.keys: dict[int, list[int]] = {}        # request → its cacheable block keys (lazy)
        self.held: dict[int, list[int]] = {}        # request → cached blocks it holds on ``held_on``
        self.held_on: dict[int, int] = {}           # request → the instance whose cache it holds blocks of
        self.registered: dict[int, int] = {}        # request → blocks of its keys registered so far
        # request → (prefill instance, cached blocks held there) while its decode leg pulls the KV
        # elsewhere: the source keeps them until the pull lands (``release`` from ``_free_source_kv``)
        self.source_held: dict[int, tuple[int, list[int]]] = {}
        self.query_tokens = 0                       # prompt tokens looked up in a prefix cache
        self.hit_tokens = 0                         # ... and found there (not computed)

    def copy(self, requests: RequestTable) -> "KvCacheManager":
        """A copy bound to ``requests`` (the cloned cluster's table); block keys are shared."""
        new = KvCacheManager.__new__(KvCacheManager)
        new.__dict__.update(self.__dict__)
        new.requests = requests
        new.held = {k: list(v) for k, v in self.held.items()}
        new.held_on = dict(self.held_on)
        new.registered = dict(self.registered)
        new.source_held = {k: (i, list(v)) for k, (i, v) in self.source_held.items()}
        return new

    def clear(self) -> None:
        """The cluster was emptied (every resident request rejected): nobody holds anything."""
        self.held.clear()
        self.held_on.clear()
        self.registered.clear()
        self.source_held.clear()

    def check(self, insts: list[InstanceState]) -> list[int]:
        """Audit: every instance's reference counts equal the holdings of resident requests.
        Returns each instance's shared-block duplicates (its KV count excludes them)."""
        refs: list[dict[int, int]] = [{} for _ in insts]
        state = self.requests.state
        for rid, keys in self.held.items():
            assert state[rid] not in ENDED and state[rid] != NEW, f"request {rid}: ended but holds cached blocks"
            r = refs[self.held_on[rid]]
            for k in keys:
                r[k] = r.get(k, 0) + 1
        for rid, (i, keys) in self.source_held.items():
            assert state[rid] not in ENDED and state[rid] != NEW, f"request {rid}: ended but holds source blocks"
            r = refs[i]
            for k in keys:
                r[k] = r.get(k, 0) + 1
        dup = []
        for inst in insts:
            i = inst.id
            held = {k: e[0] for k, e in inst.prefix_cache.entries.items() if e[0]}
            assert held == refs[i], f"instance {i}: prefix-cache reference counts drift"
            dup.append(sum(v - 1 for v in held.values()))
            assert inst.prefix_cache.dup == dup[i], \
                f"instance {i}: shared-block count {inst.prefix_cache.dup} != {dup[i]}"
        return dup

    def block_keys(self, rid: int) -> list[int]:
        """The request's cacheable KV blocks (of ``block_size`` tokens), as keys: block k (tokens up
        to e = bs·(k+1)) is identified by the chained workload id of the workload block j holding
        token e − 1 and by e's offset in it, so two requests share it only when their first e
        tokens are the same. Blocks past the request's ids or its input + output have no key."""
        requests = self.requests
        keys = self.keys.get(rid)
        if keys is None:
            ids = self.workload.prefix_ids(rid).tolist()
            block_tokens = self.workload.prefix_block_tokens
            bs = self.block_size
            limit = min(len(ids) * block_tokens, requests.input_tokens[rid] + requests.output_tokens[rid])
            keys = []
            for k in range(limit // bs):
                e = bs * (k + 1)
                j = (e - 1) // block_tokens
                keys.append(ids[j] * (block_tokens + 1) + (e - j * block_tokens))
            self.keys[rid] = keys
        return keys

    def plan_view(self, inst: InstanceState) -> "PrefixPlanView":
        """A what-if view of ``inst``'s prefix cache for one scheduling step (scheduler.py)."""
        return PrefixPlanView(self, inst)

    def admit(self, inst: InstanceState, rid: int, hit_blocks: int, tokens: int) -> None:
        """Admit ``rid`` on ``inst`` as the scheduler planned it (``PrefixPlanView.admission``): take
        its ``hit_blocks`` cached blocks (their tokens are not computed but count as its KV) and
        the new blocks of its first chunk of ``tokens``."""
        requests = self.requests
        bs = inst.block_size
        total = requests.input_tokens[rid] + requests.generated[rid]
        keys = self.block_keys(rid)
        h = hit_blocks
        hit = h * bs
        add = -(-(hit + tokens) // bs) - h        # blocks beyond the hit ones
        pc = inst.prefix_cache
        shared = pc.acquire(keys[:h]) if h else 0
        requests.blocks[rid] = h + add
        inst.other_blocks += h + add - shared
        requests.computed[rid] = hit
        if keys:
            self.held[rid] = keys[:h]
            self.held_on[rid] = inst.id
            self.registered[rid] = h
        if hit and requests.leg[rid] == 0:
            inst.prefill_tokens_left -= hit
            inst.prefill_tokens_left_sq += (total - hit) ** 2 - total * total
        if rid not in requests.cached_tokens:
            requests.cached_tokens[rid] = hit
        inst.w_prefix_query_tokens += total
        inst.w_prefix_hit_tokens += hit
        self.query_tokens += total
        self.hit_tokens += hit

    def pull(self, inst: InstanceState, rid: int, hit_blocks: int) -> int:
        """A decode leg starts pulling its prompt's KV into ``inst`` as the scheduler planned it
        (``PrefixPlanView.admission`` on the prompt): it takes the ``hit_blocks`` cached here and
        new blocks for the rest of the prompt, which it pulls. The pulled blocks are cached when
        they land (``register``; vLLM ``_update_waiting_for_remote_kv`` caches them on receipt).
        Returns the prompt tokens found here (not pulled)."""
        requests = self.requests
        bs = inst.block_size
        n_in = requests.input_tokens[rid]
        keys = self.block_keys(rid)
        h = hit_blocks
        nb = -(-n_in // bs)
        src = self.held_on.pop(rid, None)
        if src is not None:   # the prefill instance keeps its cached blocks until the pull lands
            self.source_held[rid] = (src, self.held.pop(rid))
            del self.registered[rid]
        shared = inst.prefix_cache.acquire(keys[:h]) if h else 0
        requests.blocks[rid] = nb
        inst.other_blocks += nb - shared
        if keys:
            self.held[rid] = keys[:h]
            self.held_on[rid] = inst.id
            self.registered[rid] = h
        hit = h * bs
        inst.w_prefix_query_tokens += n_in
        inst.w_prefix_hit_tokens += hit
        self.query_tokens += n_in
        self.hit_tokens += hit
        return hit

    def register(self, inst: InstanceState, rid: int, upto: int, t: float) -> None:
        """The request's first ``upto`` blocks are computed on ``inst``: cache its keyed ones."""
        done = self.registered[rid]
        keys = self.block_keys(rid)
        upto = min(upto, len(keys))
        if upto <= done:
            return
        self.held[rid].extend(inst.prefix_cache.register(keys[done:upto], kv_blocks_in_use(inst, t)))
        self.registered[rid] = upto

    def release(self, inst: InstanceState, rid: int, nblocks: int, t: float) -> None:
        """The request's ``nblocks`` blocks left ``inst`` (already taken off its KV count): cached
        blocks others still hold stay in use, the rest join the free queue (still cached)."""
        held = self.held.pop(rid, None) if self.held_on.get(rid) == inst.id else None
        if held is not None:
            del self.held_on[rid]
            del self.registered[rid]
        elif rid in self.source_held and self.source_held[rid][0] == inst.id:
            held = self.source_held.pop(rid)[1]
        inst.other_blocks += inst.prefix_cache.release(held or [], nblocks, kv_blocks_in_use(inst, t),
                                                       inst.capacity_blocks)

    def release_finished(self, inst: InstanceState, rid: int, kv_tokens: int, t: float,
                         nblocks: int | None = None) -> None:
        """A request finished on ``inst`` with ``kv_tokens`` of KV (already off the KV count): cache
        its computed keyed blocks (its output too: a conversation's next turn repeats it), free."""
        if self.held_on.get(rid) == inst.id:
            self.register(inst, rid, kv_tokens // inst.block_size, t)
        self.release(inst, rid, -(-kv_tokens // inst.block_size) if nblocks is None else nblocks, t)


class PrefixPlanView:
    """One scheduling step's what-if view of an instance's prefix cache (scheduler.py plans a batch
    without changing any state). It answers admission lookups and preemption releases exactly as
    the cache would after the step's earlier decisions, by keeping their reference-count changes
    (``ref_delta``) and taken-back free blocks (``touched_delta``) aside. Entries a lookup finds
    evicted are listed in ``evicted``; the engine drops them when it applies the plan (vLLM's
    free-queue pop evicts them; the cache forgets them lazily)."""

    __slots__ = ("kv", "inst", "ref_delta", "touched_delta", "evicted")

    def __init__(self, kv: KvCacheManager, inst: InstanceState) -> None:
        self.kv = kv
        self.inst = inst
        self.ref_delta: dict[int, int] = {}
        self.touched_delta = 0
        self.evicted: list[int] = []

    def admission(self, rid: int, total: int, budget: int, free: int) -> tuple[int, int, int] | None:
        """Admit a waiting prompt of ``total`` tokens (none computed) with ``free`` KV blocks left and
        ``budget`` tokens: look its prefix up (vLLM ``get_computed_blocks``: at most prompt − 1 tokens
        hit, so one token is always computed). Returns ``(hit blocks, tokens to compute, free blocks it
        uses)`` (its new blocks and the hit blocks no one holds: those leave the free queue), or None
        if its whole sequence would not fit (vLLM ``scheduler_reserve_full_isl``, on by default:
        ``KVCacheManager.allocate_slots(full_sequence_must_fit=True)`` admits a prompt only if the
        free blocks hold all of it, not just its first chunk)."""
        inst = self.inst
        bs = inst.block_size
        keys = self.kv.block_keys(rid)
        if keys:
            h, touched, ev = inst.prefix_cache.peek(keys, (total - 1) // bs, inst.capacity_blocks - free,
                                                 self.ref_delta, self.touched_delta)
            if ev is not None:
                self.evicted.append(ev)
        else:
            h = touched = 0
        hit = h * bs
        c = min(total - hit, budget)
        if -(-total // bs) - h + touched > free:
            return None
        add = -(-(hit + c) // bs) - h        # blocks beyond the hit ones
        delta = self.ref_delta
        for k in keys[:h]:
            delta[k] = delta.get(k, 0) + 1
        self.touched_delta += touched
        return h, c, add + touched

    def release(self, rid: int) -> int:
        """``rid``'s KV leaves the instance (preempted): how many of its blocks stay in use because
        other requests hold them (cached prefix blocks)."""
        kv = self.kv
        if kv.held_on.get(rid) != self.inst.id:
            return 0
        entries, delta = self.inst.prefix_cache.entries, self.ref_delta
        still = 0
        for k in kv.held.get(rid, ()):
            d = delta.get(k, 0) - 1
            delta[k] = d
            if entries[k][0] + d:
                still += 1
        return still
