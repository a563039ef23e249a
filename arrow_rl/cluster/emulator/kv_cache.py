"""The KV-cache manager's cluster-wide side: which prefix-cache blocks each request holds, where.

Block counting itself is per instance and incremental (``InstanceState.other_blocks`` plus the lazy
decode set's ``decode_set_blocks``); each instance's cached blocks, reference counts and LRU
eviction are its ``PrefixCache`` (prefix_cache.py, after vLLM v1's ``KVCacheManager``). This module
ties the two to requests, with the calls the scheduler and the engine make at each step of a
request's KV life:

- ``admit``: a waiting prompt is admitted on an instance: look its prefix up, take the hit blocks,
  allocate the first chunk's (the scheduler calls it only for requests with nothing computed);
- ``register``: a chunk was computed: cache its full keyed blocks;
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


def kv_blocks_in_use(I: InstanceState, t: float) -> int:
    """KV blocks in use on ``I`` at ``t`` (a decode run in progress included)."""
    k = iterations_done_by(I, t) if I.plan == DECODE_RUN and t > I.plan_start else 0
    return I.other_blocks + I.decode_set_blocks(I.decode_iterations + k)


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
        return new

    def clear(self) -> None:
        """The cluster was emptied (every resident request rejected): nobody holds anything."""
        self.held.clear()
        self.held_on.clear()
        self.registered.clear()

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
        dup = []
        for I in insts:
            i = I.id
            held = {k: e[0] for k, e in I.prefix_cache.entries.items() if e[0]}
            assert held == refs[i], f"instance {i}: prefix-cache reference counts drift"
            dup.append(sum(v - 1 for v in held.values()))
            assert I.prefix_cache.dup == dup[i], f"instance {i}: shared-block count {I.prefix_cache.dup} != {dup[i]}"
        return dup

    def block_keys(self, rid: int) -> list[int]:
        """The request's cacheable KV blocks (of ``block_size`` tokens), as keys: block k (tokens up
        to e = bs·(k+1)) is identified by the chained workload id of the workload block j holding
        token e − 1 and by e's offset in it, so two requests share it only when their first e
        tokens are the same. Blocks past the request's ids or its input + output have no key."""
        R = self.requests
        keys = self.keys.get(rid)
        if keys is None:
            ids = self.workload.prefix_ids(rid).tolist()
            B = self.workload.prefix_block_tokens
            bs = self.block_size
            limit = min(len(ids) * B, R.input_tokens[rid] + R.output_tokens[rid])
            keys = []
            for k in range(limit // bs):
                e = bs * (k + 1)
                j = (e - 1) // B
                keys.append(ids[j] * (B + 1) + (e - j * B))
            self.keys[rid] = keys
        return keys

    def admit(self, I: InstanceState, rid: int, budget: int, free: int, used: int) -> bool:
        """Admit the waiting request at the head of ``I.waiting`` (no token computed yet) if its first
        chunk fits, after looking up its prefix in ``I``'s cache (vLLM ``get_computed_blocks``: at
        most prompt − 1 tokens hit, so one token is always computed). Cached tokens are not computed
        but their blocks count as its KV. Returns False (nothing changed) if it does not fit."""
        R = self.requests
        bs = I.block_size
        total = R.input_tokens[rid] + R.generated[rid]
        keys = self.block_keys(rid)
        h, touched = I.prefix_cache.lookup(keys, (total - 1) // bs, used) if keys else (0, 0)
        hit = h * bs
        c = min(total - hit, budget)
        add = -(-(hit + c) // bs) - h        # blocks beyond the hit ones
        if add + touched > free:
            return False
        pc = I.prefix_cache
        shared = pc.acquire(keys[:h]) if h else 0
        R.blocks[rid] = h + add
        I.other_blocks += h + add - shared
        R.computed[rid] = hit
        if keys:
            self.held[rid] = keys[:h]
            self.held_on[rid] = I.id
            self.registered[rid] = h
        if hit and R.leg[rid] == 0:
            I.prefill_tokens_left -= hit
            I.prefill_tokens_left_sq += (total - hit) ** 2 - total * total
        if rid not in R.cached_tokens:
            R.cached_tokens[rid] = hit
        I.w_prefix_query_tokens += total
        I.w_prefix_hit_tokens += hit
        self.query_tokens += total
        self.hit_tokens += hit
        return True

    def register(self, I: InstanceState, rid: int, upto: int, t: float) -> None:
        """The request's first ``upto`` blocks are computed on ``I``: cache its keyed ones."""
        done = self.registered[rid]
        keys = self.block_keys(rid)
        upto = min(upto, len(keys))
        if upto <= done:
            return
        self.held[rid].extend(I.prefix_cache.register(keys[done:upto], kv_blocks_in_use(I, t)))
        self.registered[rid] = upto

    def release(self, I: InstanceState, rid: int, nblocks: int, t: float) -> None:
        """The request's ``nblocks`` blocks left ``I`` (already taken off its KV count): cached
        blocks others still hold stay in use, the rest join the free queue (still cached)."""
        held = self.held.pop(rid, None) if self.held_on.get(rid) == I.id else None
        if held is not None:
            del self.held_on[rid]
            del self.registered[rid]
        I.other_blocks += I.prefix_cache.release(held or [], nblocks, kv_blocks_in_use(I, t), I.capacity_blocks)

    def release_finished(self, I: InstanceState, rid: int, kv_tokens: int, t: float, nblocks: int | None = None) -> None:
        """A request finished on ``I`` with ``kv_tokens`` of KV (already off the KV count): cache
        its computed keyed blocks (its output too: a conversation's next turn repeats it), free."""
        if self.held_on.get(rid) == I.id:
            self.register(I, rid, kv_tokens // I.block_size, t)
        self.release(I, rid, -(-kv_tokens // I.block_size) if nblocks is None else nblocks, t)
