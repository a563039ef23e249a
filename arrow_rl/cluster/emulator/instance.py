"""Per-instance state of the emulator, kept lean so that a cluster can be cloned and stepped fast.

The running decode sequences of an instance form a *lazy decode set*: every one of them gains one
token per iteration (Arrow §5.4: decode requests are always in the running batch), so instead of
updating each sequence we count the instance's decode iterations (``decode_iterations``) and store, per
sequence, the offset ``o = KV tokens − decode_iterations`` at which it joined. Its KV length at any later time
is ``o + decode_iterations``. Sums over the set (context, KV blocks) and the next finish (a heap keyed on the
iteration at which each sequence emits its last token) are then O(1)/O(log n), which is what lets
the cluster jump over whole runs of decode iterations in closed form.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import TYPE_CHECKING

from arrow_rl.cluster.base import Role
from arrow_rl.cluster.emulator.requests import DECODING

if TYPE_CHECKING:
    from arrow_rl.cluster.emulator.requests import RequestTable

# plan kinds
IDLE = 0
ONE_ITERATION = 1   # one iteration with an arbitrary batch (prefill chunks, possibly decodes)
DECODE_RUN = 2      # K identical decode-only iterations, summed in closed form


class InstanceState:
    """Queues, lazy decode set, KV accounting, the current plan and window accumulators."""

    __slots__ = (
        "id", "role", "block_size", "capacity_blocks", "blocked_until", "wake_at",
        "running", "prefilling", "waiting", "transfer_queue", "queue_order_front", "queue_order_back", "landed", "transfers_in",
        "decode_iterations", "num_decoding", "decode_offset_sum", "decode_offset_blocks_sum", "decode_offset_residues", "finish_heap", "decode_blocks_memo_at", "decode_blocks_memo",
        "other_blocks",
        "prefill_legs", "prefill_tokens_left", "prefill_tokens_left_sq", "decode_legs_waiting", "decode_legs_waiting_tokens",
        "plan", "plan_start", "plan_end", "plan_iterations", "plan_iterations_counted", "plan_decodes", "run_step_base_s", "run_step_per_token_s", "run_start_context", "plan_chunks",
        "plan_prefill_tokens", "plan_version", "decode_stall_since", "cached_view", "done_memo_version", "done_memo_iterations", "done_memo_from", "done_memo_until",
        "awaiting_first_token", "prefix_cache", "w_prefix_query_tokens", "w_prefix_hit_tokens", "w_decode_iterations", "w_decode_time_s", "w_decode_tokens", "w_prefill_tokens", "w_busy_s",
    )

    def __init__(self, iid: int, role: Role, cap_blocks: int, block_size: int) -> None:
        self.id = iid
        self.role = role
        self.block_size = block_size
        self.capacity_blocks = cap_blocks
        self.blocked_until = float("-inf")   # flip delay: no admissions before this time
        self.wake_at = float("-inf")         # time of the pending wake-up event, if any
        self.running: list[int] = []         # request ids in admission order (preemption pops the newest)
        self.prefilling: list[int] = []            # running requests still computing their prompt, in order
        self.waiting: deque[int] = deque()   # FCFS; preempted requests go back to the front (vLLM v1)
        self.transfer_queue: deque[int] = deque()        # decode legs waiting for KV room to start their transfer
        # ``waiting`` and ``transfer_queue`` are one FCFS line, as vLLM v1's single waiting queue: each
        # request's place (``RequestTable.queue_order``) comes from these counters (see ``enqueue``)
        self.queue_order_front = 0
        self.queue_order_back = 0
        self.landed: deque[int] = deque()    # transferred KV arrived; joins the running batch next
        self.awaiting_first_token: list[int] = []          # joined the decode set from a transfer; their first decode
                                             # step emits the client's first token
        self.transfers_in = 0                    # transfers in flight towards this instance
        # lazy decode set
        self.decode_iterations = 0                      # decode iterations run so far
        self.num_decoding = 0
        self.decode_offset_sum = 0                       # Σ o
        self.decode_offset_blocks_sum = 0                       # Σ floor(o / bs)
        self.decode_offset_residues = [0] * block_size      # histogram of o mod bs
        self.finish_heap: list[tuple[int, int]] = []   # (iteration of last token, request id)
        self.decode_blocks_memo_at = -1                      # last ``decode_set_blocks`` argument (-1: none; reset when the set changes)
        self.decode_blocks_memo = 0                      # ... and its answer
        self.other_blocks = 0                # KV blocks held by anything outside the decode set,
                                             # less the duplicates of shared prefix blocks
        self.prefix_cache = None                   # PrefixCache when the workload carries prefixes
        # resident work summaries (InstanceView, Arrow §5.3 cost terms)
        self.prefill_legs = 0                        # prefill legs resident (waiting or partially computed)
        self.prefill_tokens_left = 0                      # Σ prompt tokens still to compute over them
        self.prefill_tokens_left_sq = 0                       # Σ (tokens still to compute)²
        self.decode_legs_waiting = 0                        # decode legs resident but outside the decode set
        self.decode_legs_waiting_tokens = 0                      # Σ L(r) = input + generated over them
        # current plan
        self.plan = IDLE
        self.plan_start = 0.0
        self.plan_end = 0.0
        self.plan_iterations = 0
        self.plan_iterations_counted = 0                      # iterations of the plan already counted in a window
        self.plan_decodes = 0
        self.run_step_base_s = 0.0
        self.run_step_per_token_s = 0.0
        self.run_start_context = 0
        self.plan_chunks: list[tuple[int, int]] = []
        self.plan_prefill_tokens = 0
        self.plan_version = 0
        self.decode_stall_since = 0.0
        self.cached_view = None   # cached (iterations into the run, InstanceView); None after any change
        # memo of ``iterations_done_by`` for plan ``done_memo_version``: ``done_memo_iterations`` done for any
        # dt = t − plan_start in [done_memo_from, done_memo_until) (the run's S(k) ≤ dt < S(k+1), exactly as computed)
        self.done_memo_version = -1
        self.done_memo_iterations = 0
        self.done_memo_from = 0.0
        self.done_memo_until = 0.0
        self.reset_window()

    def reset_window(self) -> None:
        self.w_prefix_query_tokens = 0                      # prompt tokens looked up in the prefix cache
        self.w_prefix_hit_tokens = 0                      # ... found there
        self.w_decode_iterations = 0
        self.w_decode_time_s = 0.0
        self.w_decode_tokens = 0
        self.w_prefill_tokens = 0
        self.w_busy_s = 0.0

    def copy(self) -> "InstanceState":
        new = InstanceState.__new__(InstanceState)
        for name in InstanceState.__slots__:
            setattr(new, name, getattr(self, name))
        new.running = list(self.running)
        new.prefilling = list(self.prefilling)
        new.waiting = deque(self.waiting)
        new.transfer_queue = deque(self.transfer_queue)
        new.landed = deque(self.landed)
        new.awaiting_first_token = list(self.awaiting_first_token)
        if self.prefix_cache is not None:
            new.prefix_cache = self.prefix_cache.copy()
        new.decode_offset_residues = list(self.decode_offset_residues)
        new.finish_heap = list(self.finish_heap)
        new.plan_chunks = list(self.plan_chunks)
        return new

    # -- the waiting line -----------------------------------------------------------------------
    def enqueue_prompt(self, requests: "RequestTable", rid: int) -> None:
        """``rid`` joins the back of the waiting line as a prompt to admit."""
        self.queue_order_back += 1
        requests.queue_order[rid] = self.queue_order_back
        self.waiting.append(rid)

    def enqueue_preempted(self, requests: "RequestTable", rid: int) -> None:
        """A preempted request goes back to the front of the waiting line (vLLM v1
        ``_preempt_request``: ``waiting.prepend_request``), ahead of prompts and KV pulls."""
        self.queue_order_front -= 1
        requests.queue_order[rid] = self.queue_order_front
        self.waiting.appendleft(rid)

    def enqueue_pull(self, requests: "RequestTable", rid: int) -> None:
        """A decode leg joins the back of the waiting line to pull its KV: vLLM v1 queues a
        remote-prefill request in the same waiting queue as new prompts (``add_request``)."""
        self.queue_order_back += 1
        requests.queue_order[rid] = self.queue_order_back
        self.transfer_queue.append(rid)

    def clear_work(self) -> None:
        """Forget every resident request (the cluster rejected them all as stuck); the role, the
        counters of iterations run and the window accumulators stay."""
        self.running, self.prefilling, self.finish_heap = [], [], []
        self.waiting.clear()
        self.transfer_queue.clear()
        self.landed.clear()
        self.awaiting_first_token = []
        self.transfers_in = self.num_decoding = self.decode_offset_sum = self.decode_offset_blocks_sum = 0
        self.other_blocks = 0
        self.decode_offset_residues = [0] * self.block_size
        self.decode_blocks_memo_at = -1
        self.prefill_legs = self.prefill_tokens_left = self.prefill_tokens_left_sq = 0
        self.decode_legs_waiting = self.decode_legs_waiting_tokens = 0
        self.plan = IDLE
        self.plan_version += 1
        self.cached_view = None

    # -- lazy decode set -----------------------------------------------------------------------
    def join_decode_set(self, requests: "RequestTable", rid: int, kv_tokens: int) -> None:
        """``rid`` (running here with ``kv_tokens`` of KV) decodes from now on: record its offset
        and the iteration of its last token."""
        o = kv_tokens - self.decode_iterations
        requests.decode_offset[rid] = o
        self.num_decoding += 1
        self.decode_offset_sum += o
        q, r = divmod(o, self.block_size)
        self.decode_offset_blocks_sum += q
        self.decode_offset_residues[r] += 1
        self.decode_blocks_memo_at = -1
        fit = requests.input_tokens[rid] + requests.output_tokens[rid] - 1 - o
        requests.last_token_iteration[rid] = fit
        heapq.heappush(self.finish_heap, (fit, rid))
        requests.state[rid] = DECODING

    def leave_decode_set(self, requests: "RequestTable", rid: int) -> int:
        """Take ``rid`` out of the decode set (finished or preempted); return its KV tokens now.
        Its finish-heap entry goes stale (``next_finish`` skips it)."""
        o = requests.decode_offset[rid]
        self.num_decoding -= 1
        self.decode_offset_sum -= o
        q, r = divmod(o, self.block_size)
        self.decode_offset_blocks_sum -= q
        self.decode_offset_residues[r] -= 1
        self.decode_blocks_memo_at = -1
        return o + self.decode_iterations

    def expand_decode_set(self, requests: "RequestTable") -> list[int]:
        """Turn the decode set into explicit running requests (the exact allocation loop of a step
        whose KV does not fit, scheduler.py): each gets its computed tokens, generated tokens and
        KV blocks in ``requests`` and on ``other_blocks``. Returns them in running order."""
        decs = [rid for rid in self.running if requests.state[rid] == DECODING]
        comp, gen, blk, n_in = requests.computed, requests.generated, requests.blocks, requests.input_tokens
        bs = self.block_size
        for rid in decs:
            c = self.leave_decode_set(requests, rid)
            comp[rid] = c
            gen[rid] = c + 1 - n_in[rid]
            b = -(-c // bs)
            blk[rid] = b
            self.other_blocks += b
        self.finish_heap = []
        return decs

    def collapse_decode_set(self, requests: "RequestTable", decs: list[int]) -> None:
        """Put the requests of ``decs`` still decoding (not preempted) back into the decode set; the
        block their next token needs is counted there (``decode_set_blocks``)."""
        blk = requests.blocks
        for rid in decs:
            if requests.state[rid] == DECODING:
                self.other_blocks -= blk[rid]
                blk[rid] = 0
                self.join_decode_set(requests, rid, requests.computed[rid])

    def next_finish(self, requests: "RequestTable") -> int:
        """The decode iteration at which the next sequence emits its last token (drops stale
        heap entries: sequences that left, or moved to another instance)."""
        heap = self.finish_heap
        st, fit, where = requests.state, requests.last_token_iteration, requests.instance
        while heap:
            f, rid = heap[0]
            if st[rid] == DECODING and fit[rid] == f and where[rid] == self.id:
                return f
            heapq.heappop(heap)
        raise AssertionError("decode set is empty")

    def decode_set_blocks(self, it: int) -> int:
        """Σ ceil((o + it) / bs) over the decode set: its KV blocks after ``it`` iterations.

        With o = bs·a + ρ and it = bs·b + s, ceil((o+it)/bs) = a + b + [ρ+s ≥ 1] + [ρ+s ≥ bs+1].
        """
        n = self.num_decoding
        if n == 0:
            return 0
        if it == self.decode_blocks_memo_at:
            return self.decode_blocks_memo
        bs = self.block_size
        b, s = divmod(it, bs)
        total = self.decode_offset_blocks_sum + n * b + n
        if s == 0:
            total -= self.decode_offset_residues[0]
        elif s >= 2:
            total += sum(self.decode_offset_residues[bs + 1 - s:])
        self.decode_blocks_memo_at = it
        self.decode_blocks_memo = total
        return total

    def kv_blocks(self, it: int) -> int:
        return self.other_blocks + self.decode_set_blocks(it)

    def decode_set_context(self, it: int) -> int:
        """Σ (KV tokens + 1) over the decode set at iteration ``it``: the context each sequence
        attends over in its next iteration, and Arrow's L(r) = input + generated."""
        return self.decode_offset_sum + self.num_decoding * (it + 1)
