"""Batch forming for one instance, as a planner that changes nothing: vLLM v1's scheduler.

At every iteration boundary an instance forms its next batch the way vLLM v1's
``Scheduler.schedule`` does with chunked prefill (vllm/v1/core/sched/scheduler.py):

1. running requests come first: every decode sequence gets one token (Arrow §5.4: decode requests
   are always in the batch), then the running prompts get chunks, in admission order, while
   ``max_num_batched_tokens`` lasts;
2. if their KV does not fit, the exact allocation loop runs: a request that cannot get its blocks
   preempts the newest running request (recompute) until it fits or is preempted itself;
3. transferred KV that has landed joins the batch, FCFS, while tokens and sequence slots last,
   not in a step that preempted: vLLM drains its ``kv_holding_waiting`` queue at the head of the
   waiting loop, after the running requests; each costs one token (the last prompt token is
   recomputed, ``_update_waiting_for_remote_kv``);
4. the waiting line is served FCFS while tokens and sequence slots last: nothing in a step that
   preempted, nothing during a flip delay. New prompts and decode legs queued for KV room share
   the line, as they share vLLM's one waiting queue (a MIXED or flipped instance holds both):
   a prompt is admitted if the KV blocks of its whole sequence fit (vLLM's
   ``scheduler_reserve_full_isl``, not just the first chunk), a decode leg starts pulling its KV
   if its prompt's blocks fit (with prefix caching, only the blocks not cached here are pulled),
   and the first that does not fit stops the line; a never-started prompt whose client gave up
   (``client_timeout_s``) is dropped instead.

Where the emulator stays apart from vLLM, on purpose (docs/emulator.md, "Conformance with vLLM's
scheduler"; tests/test_vllm_scheduler_conformance.py checks the rest against vLLM's own scheduler):

- vLLM keeps free the blocks that prompts in flight still need before it starts a pull
  (``reserved_blocks``); it never binds here, since a chunk is cut only by the token budget, so a
  partly scheduled prompt means no token is left and no pull is considered.
- The cost of a batch, not its forming: one frontend cost per request (``frontend_s``, fitted end
  to end with that rule) though a disaggregated request passes two API servers, and a batch is
  costed as decodes + 1 sequences however many prompt chunks it holds (each extra one would add
  about 9 µs, under 0.2% of an iteration, to constants fitted with this rule).

:meth:`BatchScheduler.plan` reads the instance (``InstanceState``) and the request table and returns
a :class:`BatchPlan`; it changes neither (prefix-cache lookups go through the step's what-if view,
``kv_cache.PrefixPlanView``). The engine (cluster.py) applies the plan: it allocates the KV, moves
requests between queues and schedules the events. :meth:`BatchScheduler.decode_run_length` then
says how many identical decode-only iterations the engine may sum in closed form (decode_run.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

from arrow_rl.cluster.emulator.instance import InstanceState
from arrow_rl.cluster.emulator.kv_cache import PrefixPlanView
from arrow_rl.cluster.emulator.requests import DECODING, RequestTable


@dataclass(frozen=True, slots=True)
class SchedulerLimits:
    """The vLLM engine limits and emulator switches batch forming obeys (``EmulatorConfig``)."""

    max_num_batched_tokens: int          # tokens per iteration, decodes included
    max_num_seqs: int                    # requests running at once
    client_timeout_s: float | None = None  # drop waiting, never-started prompts older than this
    exact_stepping: bool = False         # plan every decode iteration on its own (reference mode)


@dataclass(slots=True)
class BatchPlan:
    """What an instance does at one iteration boundary: request ids, in the order the engine applies
    them. The decode set runs in every batch and is not listed. A chunk of ``c`` tokens for a
    request with ``computed`` tokens and ``blocks`` KV blocks needs ``ceil((computed + c) / bs) −
    blocks`` more blocks; the engine allocates them from the chunks, except on the exact allocation
    loop's path (``materialised``), where preemptions interleave with explicit ``allocations``.
    Parts a plan does not use stay shared empty tuples (plans are made at every busy boundary)."""

    joined: int = 0          # landed transfers joining the decode set (after the running requests,
                             # before the admitted): the head of ``landed``
    chunks: Sequence[tuple[int, int]] = ()   # the iteration's prompt chunks (request, tokens):
                                             # running prompts first, then the admitted ones
    admitted: int = 0        # the last ``admitted`` chunks are prompts admitted from ``waiting``
    hit_blocks: Sequence[int] = ()     # prefix caching: each admitted prompt's cached blocks
    timed_out: Sequence[int] = ()      # waiting prompts dropped (client timeout); they and the
                                       # admitted are the head of ``waiting``, in its order
    pulls: int = 0           # queued decode legs (head of ``transfer_queue``) starting their KV pull
    pull_hit_blocks: Sequence[int] = ()   # prefix caching: each pull's prompt blocks cached here (not pulled)
    materialised: bool = False   # the exact allocation loop ran (KV did not fit): the decode set is
                                 # expanded to explicit requests, then the survivors go back into it
    allocations: Sequence[tuple[int, int]] = ()   # materialised: (request, KV blocks added), in order
    # materialised: (victim, allocations applied before it), newest running request first
    preempted: Sequence[tuple[int, int]] = ()
    evicted: Sequence[int] = ()        # prefix-cache keys the lookups found evicted


_LAST = float("inf")   # the waiting-line place of the sentinel that ends the line

# The plan when nothing but the decode set runs and its KV fits (most boundaries): one shared,
# never-mutated object, so the common case allocates nothing.
DECODES_ONLY = BatchPlan()


class BatchScheduler:
    """Forms batches under ``limits``; holds no state of its own and no reference to the cluster."""

    __slots__ = ("limits", "_max_tokens", "_max_seqs", "_timeout")

    def __init__(self, limits: SchedulerLimits) -> None:
        self.limits = limits
        self._max_tokens = limits.max_num_batched_tokens    # read on every boundary: plain slots
        self._max_seqs = limits.max_num_seqs
        self._timeout = limits.client_timeout_s

    def plan(self, inst: InstanceState, requests: RequestTable, t: float,
             prefix: PrefixPlanView | None = None) -> BatchPlan:
        """The batch instance ``inst`` runs from ``t`` (see the module docstring for the order).

        Reads ``inst``'s queues, decode set and KV counts and ``requests``'s per-request counters; changes
        neither. ``prefix`` is ``inst``'s prefix-cache view when prefix caching is on."""
        it = inst.decode_iterations
        cap = inst.capacity_blocks
        other = inst.other_blocks
        dec_next = inst.decode_set_blocks(it + 1) if inst.num_decoding else 0   # decode-set KV next step
        if not (inst.landed or inst.prefilling or inst.waiting or inst.transfer_queue) and other + dec_next <= cap:
            return DECODES_ONLY
        p = BatchPlan()
        n_run = len(inst.running)
        # 1. running prompts get chunks after the decodes' tokens
        bs = inst.block_size
        comp, gen, blk, n_in = requests.computed, requests.generated, requests.blocks, requests.input_tokens
        budget = self._max_tokens - inst.num_decoding
        need = other + dec_next
        chunks = []
        for rid in inst.prefilling:
            if budget <= 0:
                break
            c = min(n_in[rid] + gen[rid] - comp[rid], budget)
            need += -(-(comp[rid] + c) // bs) - blk[rid]
            chunks.append((rid, c))
            budget -= c
        # 2. the KV does not fit: the exact allocation loop, with preemption
        preempted = False
        if need > cap:
            budget, need, n_run = self._plan_under_pressure(inst, requests, p, other, prefix)
            chunks = list(p.chunks)
            preempted = bool(p.preempted)
        # 3. landed KV joins (it holds its blocks: those of its first decode step)
        if inst.landed and not preempted and budget > 0 and n_run < self._max_seqs:
            p.joined, held, next_blocks = self._plan_joins(inst, requests, min(budget, self._max_seqs - n_run))
            n_run += p.joined
            budget -= p.joined
            need += next_blocks - held
        # 4. the waiting line: prompts to admit and decode legs to pull, one FCFS order (vLLM v1:
        # not in a step that preempted, none during a flip delay)
        if (inst.waiting or inst.transfer_queue) and not preempted and t >= inst.blocked_until:
            self._plan_waiting_line(inst, requests, t, p, chunks, budget, n_run, cap - need, prefix)
        if chunks:
            p.chunks = chunks
        if prefix is not None and prefix.evicted:
            p.evicted = prefix.evicted
        return p

    @staticmethod
    def _plan_joins(inst: InstanceState, requests: RequestTable, room: int) -> tuple[int, int, int]:
        """Step 3: how many landed requests join the batch, FCFS, ``room`` at most (the tokens and
        sequence slots left). The pulled KV covers the prompt but its last token, which the first
        decode step recomputes: each joins the decode set as a sequence of n_in − 1 tokens. Returns
        how many join, the KV blocks they hold now and their decode-set blocks next step."""
        blk, n_in, bs = requests.blocks, requests.input_tokens, inst.block_size
        joined = held = next_blocks = 0
        for rid in inst.landed:
            if joined == room:
                break
            joined += 1
            held += blk[rid]
            next_blocks += -(-n_in[rid] // bs)
        return joined, held, next_blocks

    def _plan_waiting_line(self, inst: InstanceState, requests: RequestTable, t: float, p: BatchPlan,
                           chunks: list[tuple[int, int]], budget: int, n_run: int, free: int,
                           prefix: PrefixPlanView | None) -> None:
        """Step 4: serve the waiting line FCFS while the token ``budget`` lasts and fewer than
        ``max_num_seqs`` run (``n_run`` do now), as vLLM v1's waiting loop does. The line is
        ``waiting`` and ``transfer_queue`` merged by ``RequestTable.queue_order``:

        - a prompt is admitted if the ``free`` KV blocks hold its whole sequence; a never-started
          prompt whose client gave up is dropped instead;
        - a decode leg starts pulling its KV if the blocks of its prompt fit. vLLM allocates them
          and parks the request in WAITING_FOR_REMOTE_KVS outside the running batch: the pull
          takes no token and no ``max_num_seqs`` slot. With prefix caching, the prompt is looked
          up here first, as a new prompt is, and only the blocks it lacks are pulled (the NIXL
          connector's ``get_num_new_matched_tokens`` counts the prompt past the local hit).

        The first request that does not fit stops the line, whichever kind it is (vLLM's loop
        ``break``s). Appends the admitted chunks to ``chunks`` and fills ``p``."""
        bs = inst.block_size
        comp, gen, blk, n_in = requests.computed, requests.generated, requests.blocks, requests.input_tokens
        order = requests.queue_order
        max_seqs = self._max_seqs
        timeout = self._timeout
        arrival = requests.arrival_s
        hits = [] if prefix is not None else None
        if inst.transfer_queue:
            legs = iter(inst.transfer_queue)
            leg = next(legs)
            # a sentinel prompt (-1) after the last one serves the decode legs queued behind it
            line = chain(inst.waiting, (-1,))
        else:
            leg = -1
            line = inst.waiting
        for rid in line:
            if budget <= 0 or n_run >= max_seqs:
                break
            if leg >= 0 or rid < 0:   # the decode legs queued ahead of this prompt start their KV pulls
                place = order[rid] if rid >= 0 else _LAST
                while leg >= 0 and order[leg] < place:
                    if prefix is not None:   # the prompt blocks cached here are kept, the rest pulled
                        a = prefix.admission(leg, n_in[leg], n_in[leg], free)
                        if a is None:
                            break
                        h, _, used = a
                        free -= used
                        if not p.pull_hit_blocks:
                            p.pull_hit_blocks = []
                        p.pull_hit_blocks.append(h)
                    else:
                        add = -(-n_in[leg] // bs)
                        if add > free:
                            break
                        free -= add
                    p.pulls += 1
                    leg = next(legs, -1)
                if rid < 0 or (leg >= 0 and order[leg] < place):   # the line's end, or a pull did not fit
                    break
            if timeout is not None and comp[rid] == 0 and t - arrival[rid] > timeout:
                if not p.timed_out:
                    p.timed_out = []
                p.timed_out.append(rid)
                continue
            if prefix is not None and comp[rid] == 0:
                a = prefix.admission(rid, n_in[rid] + gen[rid], budget, free)
                if a is None:
                    break
                h, c, used = a
                free -= used
                hits.append(h)
            else:
                total = n_in[rid] + gen[rid]
                if -(-total // bs) - blk[rid] > free:   # the whole sequence must fit (kv_cache.admission)
                    break
                c = min(total - comp[rid], budget)
                free -= -(-(comp[rid] + c) // bs) - blk[rid]
                if hits is not None:
                    hits.append(0)
            chunks.append((rid, c))
            p.admitted += 1
            budget -= c
            n_run += 1
        if hits:
            p.hit_blocks = hits

    def _plan_under_pressure(self, inst: InstanceState, requests: RequestTable, p: BatchPlan,
                             other: int, prefix: PrefixPlanView | None) -> tuple[int, int, int]:
        """The exact vLLM v1 allocation loop when the KV does not fit everything (rare path).

        Decode sequences first (Arrow §5.4), then running prompts. When a request cannot get its
        blocks, the newest running request is preempted (recompute) until the request fits or is
        preempted itself: vLLM v1 ``Scheduler.schedule`` pops ``self.running`` from the end (the
        last admitted) under the FCFS policy, and a step that preempted admits nothing new. Fills
        ``p`` and returns the token budget left, the KV blocks needed after the step and the
        number of requests running."""
        bs = inst.block_size
        cap = inst.capacity_blocks
        comp, gen, blk, n_in = requests.computed, requests.generated, requests.blocks, requests.input_tokens
        p.materialised = True
        running = list(inst.running)
        decs, ctx, blocks = self._explicit_decodes(inst, requests)
        other += sum(blocks.values())
        is_dec = set(decs)
        gone: set[int] = set()
        budget = self.limits.max_num_batched_tokens
        sched: dict[int, int] = {}
        allocs: list[tuple[int, int]] = []
        preempted: list[tuple[int, int]] = []
        p.allocations, p.preempted = allocs, preempted
        for rid in decs + list(inst.prefilling):
            if budget <= 0:
                break
            if rid in gone:      # preempted earlier in this loop
                continue
            if rid in is_dec:
                c, kv = 1, ctx[rid]
            else:
                c, kv = min(n_in[rid] + gen[rid] - comp[rid], budget), comp[rid]
            have = blocks.get(rid, blk[rid])
            need = -(-(kv + c) // bs) - have
            ok = True
            while other + need > cap:
                victim = running.pop()
                if victim in sched:
                    budget += sched.pop(victim)
                still = prefix.release(victim) if prefix is not None else 0   # shared prefix blocks stay
                other -= blocks.get(victim, blk[victim]) - still
                gone.add(victim)
                preempted.append((victim, len(allocs)))
                if victim == rid:
                    ok = False
                    break
            if not ok:
                break
            other += need
            blocks[rid] = have + need
            allocs.append((rid, need))
            sched[rid] = c
            budget -= c
        # surviving decodes go back into the decode set; their next block is counted there
        survivors, held, next_blocks = _survivors(decs, gone, ctx, blocks, bs)
        p.chunks = [(rid, c) for rid, c in sched.items() if rid not in is_dec]
        budget = self.limits.max_num_batched_tokens - survivors - sum(c for _, c in p.chunks)
        return budget, other - held + next_blocks, len(running)

    @staticmethod
    def _explicit_decodes(inst: InstanceState, requests: RequestTable
                          ) -> tuple[list[int], dict[int, int], dict[int, int]]:
        """The decode set as explicit requests, in running order, with their KV tokens now and
        their KV blocks (the blocks of the requests the step touches)."""
        bs = inst.block_size
        it = inst.decode_iterations
        st, offset = requests.state, requests.decode_offset
        decs = [rid for rid in inst.running if st[rid] == DECODING]
        ctx: dict[int, int] = {}
        blocks: dict[int, int] = {}
        for rid in decs:
            c = offset[rid] + it
            ctx[rid] = c
            blocks[rid] = -(-c // bs)
        return decs, ctx, blocks

    def decode_run_length(self, inst: InstanceState, until_finish: int, after_preemption: bool) -> int:
        """How many decode-only iterations to plan as one closed-form run (decode_run.py): up to the
        next sequence's last token (``until_finish`` iterations away), fewer if the decode set's KV
        outgrows the instance first. One iteration in ``exact_stepping`` mode, or after a preemption
        while work waits (vLLM admits waiting work again at the next step)."""
        if self.limits.exact_stepping or after_preemption:
            return 1
        k = until_finish
        cap, it, other = inst.capacity_blocks, inst.decode_iterations, inst.other_blocks
        if other + inst.decode_set_blocks(it + k) > cap:
            lo, hi = 1, k  # largest run whose KV fits: lo fits, hi does not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if other + inst.decode_set_blocks(it + mid) <= cap:
                    lo = mid
                else:
                    hi = mid
            k = lo
        return k


def _survivors(decs: list[int], gone: set[int], ctx: dict[int, int], blocks: dict[int, int],
               bs: int) -> tuple[int, int, int]:
    """The decodes of ``decs`` not preempted (not in ``gone``): how many, the KV blocks they hold
    now (``blocks``) and those of their next step in the decode set (``ctx`` KV tokens + 1)."""
    survivors = held = next_blocks = 0
    for rid in decs:
        if rid not in gone:
            survivors += 1
            held += blocks[rid]
            next_blocks += -(-(ctx[rid] + 1) // bs)
    return survivors, held, next_blocks
