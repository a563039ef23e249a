"""Per-instance state of the emulator, kept lean so that a cluster can be cloned and stepped fast.

The running decode sequences of an instance form a *lazy decode set*: every one of them gains one
token per iteration (Arrow §5.4: decode requests are always in the running batch), so instead of
updating each sequence we count the instance's decode iterations (``dec_it``) and store, per
sequence, the offset ``o = KV tokens − dec_it`` at which it joined. Its KV length at any later time
is ``o + dec_it``. Sums over the set (context, KV blocks) and the next finish (a heap keyed on the
iteration at which each sequence emits its last token) are then O(1)/O(log n), which is what lets
the cluster jump over whole runs of decode iterations in closed form.
"""

from __future__ import annotations

from collections import deque

from arrow_rl.cluster.base import Role

# plan kinds
IDLE = 0
SINGLE = 1   # one iteration with an arbitrary batch (prefill chunks, possibly decodes)
RUN = 2      # K identical decode-only iterations, summed in closed form


class InstanceState:
    """Queues, lazy decode set, KV accounting, the current plan and window accumulators."""

    __slots__ = (
        "id", "role", "bs", "cap_blocks", "blocked_until", "wake_at",
        "running", "pref", "waiting", "tq", "landed", "inflight",
        "dec_it", "n_dec", "dec_O", "dec_A", "dec_cnt", "dec_heap", "db_it", "db_val",
        "other_blocks",
        "pf_n", "pf_tok", "pf_sq", "dl_n", "dl_tok",
        "plan", "p_start", "p_end", "p_K", "p_kacc", "p_n", "p_alpha", "p_beta", "p_C0", "p_chunks",
        "p_ptok", "p_ver", "dec_wait_since", "vc", "cb_ver", "cb_k", "cb_lo", "cb_hi",
        "newdec", "pcache", "w_qtok", "w_htok", "w_iters", "w_dtime", "w_dtok", "w_ptok", "w_busy",
    )

    def __init__(self, iid: int, role: Role, cap_blocks: int, block_size: int) -> None:
        self.id = iid
        self.role = role
        self.bs = block_size
        self.cap_blocks = cap_blocks
        self.blocked_until = float("-inf")   # flip delay: no admissions before this time
        self.wake_at = float("-inf")         # time of the pending wake-up event, if any
        self.running: list[int] = []         # request ids in admission order (preemption pops the newest)
        self.pref: list[int] = []            # running requests still computing their prompt, in order
        self.waiting: deque[int] = deque()   # FCFS; preempted requests go back to the front (vLLM v1)
        self.tq: deque[int] = deque()        # decode legs waiting for KV room to start their transfer
        self.landed: deque[int] = deque()    # transferred KV arrived; joins the running batch next
        self.newdec: list[int] = []          # joined the decode set from a transfer; their first decode
                                             # step emits the client's first token
        self.inflight = 0                    # transfers in flight towards this instance
        # lazy decode set
        self.dec_it = 0                      # decode iterations run so far
        self.n_dec = 0
        self.dec_O = 0                       # Σ o
        self.dec_A = 0                       # Σ floor(o / bs)
        self.dec_cnt = [0] * block_size      # histogram of o mod bs
        self.dec_heap: list[tuple[int, int]] = []   # (iteration of last token, request id)
        self.db_it = -1                      # last ``dec_blocks`` argument (-1: none; reset when the set changes)
        self.db_val = 0                      # ... and its answer
        self.other_blocks = 0                # KV blocks held by anything outside the decode set,
                                             # less the duplicates of shared prefix blocks
        self.pcache = None                   # PrefixCache when the workload carries prefixes
        # resident work summaries (InstanceView, Arrow §5.3 cost terms)
        self.pf_n = 0                        # prefill legs resident (waiting or partially computed)
        self.pf_tok = 0                      # Σ prompt tokens still to compute over them
        self.pf_sq = 0                       # Σ (tokens still to compute)²
        self.dl_n = 0                        # decode legs resident but outside the decode set
        self.dl_tok = 0                      # Σ L(r) = input + generated over them
        # current plan
        self.plan = IDLE
        self.p_start = 0.0
        self.p_end = 0.0
        self.p_K = 0
        self.p_kacc = 0                      # iterations of the plan already counted in a window
        self.p_n = 0
        self.p_alpha = 0.0
        self.p_beta = 0.0
        self.p_C0 = 0
        self.p_chunks: list[tuple[int, int]] = []
        self.p_ptok = 0
        self.p_ver = 0
        self.dec_wait_since = 0.0
        self.vc = None   # cached (iterations into the run, InstanceView); None after any change
        # cached ``_completed_by`` answer for plan ``cb_ver``: ``cb_k`` iterations done for any
        # dt = t − p_start in [cb_lo, cb_hi) (the run's S(k) ≤ dt < S(k+1), exactly as computed)
        self.cb_ver = -1
        self.cb_k = 0
        self.cb_lo = 0.0
        self.cb_hi = 0.0
        self.reset_window()

    def reset_window(self) -> None:
        self.w_qtok = 0                      # prompt tokens looked up in the prefix cache
        self.w_htok = 0                      # ... found there
        self.w_iters = 0
        self.w_dtime = 0.0
        self.w_dtok = 0
        self.w_ptok = 0
        self.w_busy = 0.0

    def copy(self) -> "InstanceState":
        new = InstanceState.__new__(InstanceState)
        for name in InstanceState.__slots__:
            setattr(new, name, getattr(self, name))
        new.running = list(self.running)
        new.pref = list(self.pref)
        new.waiting = deque(self.waiting)
        new.tq = deque(self.tq)
        new.landed = deque(self.landed)
        new.newdec = list(self.newdec)
        if self.pcache is not None:
            new.pcache = self.pcache.copy()
        new.dec_cnt = list(self.dec_cnt)
        new.dec_heap = list(self.dec_heap)
        new.p_chunks = list(self.p_chunks)
        return new

    # -- lazy decode set -----------------------------------------------------------------------
    def dec_blocks(self, it: int) -> int:
        """Σ ceil((o + it) / bs) over the decode set: its KV blocks after ``it`` iterations.

        With o = bs·a + ρ and it = bs·b + s, ceil((o+it)/bs) = a + b + [ρ+s ≥ 1] + [ρ+s ≥ bs+1].
        """
        n = self.n_dec
        if n == 0:
            return 0
        if it == self.db_it:
            return self.db_val
        bs = self.bs
        b, s = divmod(it, bs)
        total = self.dec_A + n * b + n
        if s == 0:
            total -= self.dec_cnt[0]
        elif s >= 2:
            total += sum(self.dec_cnt[bs + 1 - s:])
        self.db_it = it
        self.db_val = total
        return total

    def kv_blocks(self, it: int) -> int:
        return self.other_blocks + self.dec_blocks(it)

    def dec_context(self, it: int) -> int:
        """Σ (KV tokens + 1) over the decode set at iteration ``it``: the context each sequence
        attends over in its next iteration, and Arrow's L(r) = input + generated."""
        return self.dec_O + self.n_dec * (it + 1)
