"""Per-instance automatic prefix caching, after vLLM v1's ``KVCacheManager`` / ``BlockPool``.

vLLM hashes every full KV block by its tokens and its parent block's hash, keeps a map from hash to
block, and keeps free blocks in one LRU queue (``FreeKVCacheBlockQueue``): a freed block goes to the
tail, a new allocation pops the head and evicts the hash of the block it pops. A new prompt first
looks up its longest run of cached full blocks (``get_computed_blocks``); the hit blocks are
shared (reference counted), and their tokens are not computed again. At least one prompt token is
always computed, to get logits (``max_cache_hit_length = prompt length − 1``).

The emulator models the same thing on the blocks that can ever be shared: those inside a
request's hashed region (``Workload.prefix_hashes``); every other block is private and never
hits, so it is only counted. Entries map a block key to ``[refs, evict_at]``:

- ``refs`` > 0: the block is held by that many resident requests; each extra holder is a
  duplicate the instance's KV count must not count twice (``dup``).
- ``refs`` == 0: the block is free but still cached, in the free queue. It is evicted once the
  queue's head has been popped ``evict_at`` times in all. Pops are counted without per-block
  state: every block in use was either popped or taken back from the cache (a *touch*), and every
  freed block left use, so ``pops = used + freed − touched``. A block freed with ``Q`` blocks in
  the queue after it is popped after ``Q`` more pops (we ignore touches of blocks ahead of it,
  which would evict it slightly sooner in vLLM).

The cluster keeps the KV counters (``InstanceState.other_blocks`` already excludes duplicates) and
calls this class at admission (lookup, acquire), at each computed chunk (register) and whenever a
request's KV leaves the instance (release).
"""

from __future__ import annotations


class PrefixCache:
    """The cached blocks of one instance and the counters that make eviction O(1)."""

    __slots__ = ("entries", "dup", "freed", "touched")

    def __init__(self) -> None:
        self.entries: dict[int, list[int]] = {}
        self.dup = 0        # Σ (refs − 1) over held blocks: KV counted twice by the holders
        self.freed = 0      # blocks that ever left use on this instance
        self.touched = 0    # cached free blocks taken back by a hit

    def copy(self) -> "PrefixCache":
        new = PrefixCache()
        new.entries = {k: list(e) for k, e in self.entries.items()}
        new.dup, new.freed, new.touched = self.dup, self.freed, self.touched
        return new

    def pops(self, used: int) -> int:
        """Head pops of the free queue so far, given the blocks in use now."""
        return used + self.freed - self.touched

    def lookup(self, keys: list[int], max_blocks: int, used: int) -> tuple[int, int]:
        """Longest run of cached blocks at the start of ``keys`` (at most ``max_blocks``):
        ``(hit blocks, how many of them are free and must be taken back)``. Drops evicted entries."""
        h, touched, evicted = self.peek(keys, max_blocks, used)
        if evicted is not None:
            del self.entries[evicted]
        return h, touched

    def peek(self, keys: list[int], max_blocks: int, used: int, ref_delta: dict[int, int] | None = None,
             touched_delta: int = 0) -> tuple[int, int, int | None]:
        """:meth:`lookup` without changing anything: ``(hit blocks, free ones among them, the key
        found evicted or None)``. ``ref_delta`` and ``touched_delta`` describe holds taken or given
        up since (the scheduler's what-if view of one step, ``kv_cache.PrefixPlanView``)."""
        entries = self.entries
        pops = None
        touched = 0
        h = 0
        for k in keys[:max_blocks]:
            e = entries.get(k)
            if e is None:
                break
            refs = e[0] + ref_delta.get(k, 0) if ref_delta else e[0]
            if refs == 0:
                if pops is None:
                    pops = used + self.freed - self.touched - touched_delta
                if pops >= e[1]:
                    return h, touched, k
                touched += 1
            h += 1
        return h, touched, None

    def acquire(self, keys: list[int]) -> int:
        """A request takes the hit blocks ``keys`` (found by :meth:`lookup`); returns the number
        that were already held by others (its duplicates)."""
        shared = 0
        for k in keys:
            e = self.entries[k]
            if e[0]:
                shared += 1
            else:
                self.touched += 1
            e[0] += 1
        self.dup += shared
        return shared

    def register(self, keys: list[int], used: int) -> list[int]:
        """A request has computed the blocks ``keys``: cache those no one has cached (vLLM keeps
        a block computed twice private: the first copy stays the cached one). Returns the keys it
        now holds as cached blocks."""
        entries = self.entries
        pops = None
        held = []
        for k in keys:
            e = entries.get(k)
            if e is not None:
                if e[0]:
                    continue
                if pops is None:
                    pops = self.pops(used)
                if pops < e[1]:
                    continue
            entries[k] = [1, 0]
            held.append(k)
        return held

    def release(self, keys: list[int], nblocks: int, used_after: int, capacity: int) -> int:
        """A request's ``nblocks`` blocks leave use, ``keys`` among them cached. Returns how many of
        those are still held by others (the caller adds them back to its KV count). Blocks no one
        holds any more join the free queue's tail, the prompt's first block last (vLLM frees a
        request's blocks in reverse order so that a prefix is evicted after its tail)."""
        entries = self.entries
        still = 0
        for k in keys:
            e = entries[k]
            e[0] -= 1
            if e[0]:
                still += 1
        self.dup -= still
        self.freed += nblocks - still
        used = used_after + still
        pops = self.pops(used)
        queue = capacity - used
        pos = 0
        for k in keys:
            e = entries[k]
            if e[0] == 0:
                e[1] = pops + queue - pos
                pos += 1
        return still

    def clear(self) -> None:
        self.entries.clear()
        self.dup = self.freed = self.touched = 0
