"""Arrow Algorithm 1: SLO-aware global request scheduling (§5.3), as a ``RequestRouter``.

Each request is scheduled twice: its prefill leg at arrival and its decode leg once the first
token is out. Candidates are priced with lexicographic cost pairs (§5.3, Algorithm 1's GetCost):

    prefill leg:  (c1, c2) = (Σ_{rd∈D_i} L(rd),  Σ_{rp∈P_i∪{r}} T(rp, i))   SLO ok iff c2 ≤ SLO_TTFT
    decode leg:   (c1, c2) = (Σ_{rp∈P_i} L(rp),  Σ_{rd∈D_i∪{r}} L(rd) − MT(i, SLO_TPOT))   ok iff c2 ≤ 0

Sums come from ``InstanceView`` (O(1) per instance) and T/MT from ``RoutingContext.profile(i)``.
With ``enable_flips=False`` step 4 is skipped, which makes this the routing half when a separate
controller (the interval Arrow or a learned agent) owns the role flips.
"""

from __future__ import annotations

from typing import Sequence

from arrow_rl.cluster.base import InstanceView, Role
from arrow_rl.arrow.config import ArrowConfig, ArrowState
from arrow_rl.arrow.flip_selection import select_flip_instance
from arrow_rl.perf.profile import InstanceProfile
from arrow_rl.routing.base import RoutingContext
from arrow_rl.workload.workload import Request


class ArrowRouter:
    """Arrow Algorithm 1 (§5.3). Shares ``ArrowState`` with ``ArrowMonitor`` (one P→D clock)."""

    def __init__(self, config: ArrowConfig | None = None, state: ArrowState | None = None,
                 enable_flips: bool = True) -> None:
        self.config = config or ArrowConfig()
        self.state = state if state is not None else ArrowState()
        self.enable_flips = enable_flips
        self.name = "arrow" if enable_flips else "arrow-noflip"
        self._profiles: dict[int, InstanceProfile] = {}
        self._max_tokens: dict[int, float] = {}

    def reset(self, num_instances: int) -> None:
        self._profiles.clear()
        self._max_tokens.clear()

    # -- helpers --------------------------------------------------------------------------------
    def _profile(self, ctx: RoutingContext, i: int) -> InstanceProfile:
        prof = self._profiles.get(i)
        if prof is None:  # §5.2: profiles are built once per instance and cached
            prof = self._profiles[i] = ctx.profile(i)
        return prof

    def _mt(self, ctx: RoutingContext, i: int) -> float:
        mt = self._max_tokens.get(i)
        if mt is None:
            mt = self._max_tokens[i] = self._profile(ctx, i).max_tokens(ctx.slo.tpot_s)
        return mt

    def candidates(self, views: Sequence[InstanceView], phase: Role) -> list[InstanceView]:
        """Alg. 1 step 2, candidate set C (ambiguity A1, ``config.candidate_set``)."""
        if self.config.candidate_set != "all":
            # common case in one pass: healthy instances of the phase's pool (same list, same order)
            pool = [v for v in views if v.healthy and v.role is phase]
            if pool:
                return pool
        healthy = [v for v in views if v.healthy] or list(views)
        if self.config.candidate_set == "all":
            return healthy
        pool = [v for v in healthy if v.role is phase]
        return pool or healthy  # empty pool: all instances

    @staticmethod
    def _max_num_seqs(ctx: RoutingContext) -> int | None:
        info = getattr(ctx, "info", None)
        extra = getattr(info, "extra", None) or {}
        v = extra.get("max_num_seqs")
        return int(v) if v is not None else None

    def decode_load(self, views: Sequence[InstanceView], ctx: RoutingContext) -> float:
        """LD for the overload rule: the monitor's last measurement (§5.5), or a profile prediction
        (mean predicted inter-token interval / SLO_TPOT over the decode pool)."""
        if self.config.decode_load_source == "monitor" and self.state.decode_load is not None:
            return self.state.decode_load
        decode = [v for v in views if v.role is Role.DECODE]
        if not decode:
            return 0.0
        tpot = ctx.slo.tpot_s
        return sum(self._profile(ctx, v.instance_id).decode_interval(v.decode_tokens) for v in decode) / (
            len(decode) * tpot
        )

    def decode_overloaded(self, views: Sequence[InstanceView], ctx: RoutingContext) -> bool:
        """Arrow §5.5 overload rule: abort D→P while LD is high (threshold per ``overload_rule``)."""
        c = self.config
        threshold = c.l_shrink if c.overload_rule == "l_shrink" else c.l_expand
        return not self.decode_load(views, ctx) < threshold

    def _flip(self, ctx: RoutingContext, views: Sequence[InstanceView], target: Role) -> int | None:
        """Alg. 3 plus the P→D cooldown (§5.5: P→D only); applies the flip through ``ctx``."""
        now = ctx.now
        if target is Role.DECODE and not self.state.p2d_allowed(now, self.config.cooldown_s):
            return None
        chosen = select_flip_instance(views, target, lambda i: self._profile(ctx, i), self.config.min_pool_size)
        if chosen is None:
            return None
        ctx.flip(chosen, target)
        self.state.record(now, chosen, target, "alg1")
        return chosen

    def prefill_costs(self, request: Request, cand: Sequence[InstanceView],
                      ctx: RoutingContext) -> list[tuple[tuple[float, float], int]]:
        """GetCost for a prefill sub-request (§5.3) on every candidate: ``[((c1, c2), id)]`` with
        c1 = Σ L(rd) (favours pure-prefill instances) and c2 = Σ T over P_i ∪ {r}, the predicted
        TTFT under sequential prefill (§4.1). The one cost path: routing and tests both use it,
        and it runs at every arrival, so T(r, i) is evaluated once per distinct profile."""
        x = request.input_tokens
        last = None
        t_new = 0.0
        costs = []
        for v in cand:
            i = v.instance_id
            prof = self._profiles.get(i)
            if prof is None:
                prof = self._profile(ctx, i)
            if prof is not last:
                last = prof
                t_new = prof.prefill_time(x)
            c2 = prof.prefill_time_sum(v.num_prefill, v.prefill_tokens, v.prefill_tokens_sq) + t_new
            costs.append(((float(v.decode_tokens), c2), i))
        return costs

    def decode_costs(self, request: Request, cand: Sequence[InstanceView],
                     ctx: RoutingContext) -> list[tuple[tuple[float, float], int]]:
        """GetCost for a decode sub-request (§5.3) on every candidate: ``[((c1, c2), id)]`` with
        c1 = Σ L(rp) and c2 = Σ L(rd) over D_i ∪ {r} minus MT(i, SLO_TPOT), where L(r) = input
        tokens + the first generated token. With ``decode_capacity_limits`` (an extension, off =
        the paper) MT is also capped by the KV capacity and a full batch is infeasible."""
        length = request.input_tokens + 1
        limits = self.config.decode_capacity_limits
        max_seqs = self._max_num_seqs(ctx) if limits else None
        costs = []
        for v in cand:
            i = v.instance_id
            mt = self._max_tokens.get(i)
            if mt is None:
                mt = self._mt(ctx, i)
            if limits:
                mt = min(mt, float(v.kv_capacity_tokens))
                if max_seqs is not None and v.num_decode + 1 > max_seqs:
                    mt = -float("inf")  # no batch slot: infeasible, ordered last
            costs.append(((float(v.prefill_tokens), float(v.decode_tokens + length - mt)), i))
        return costs

    @staticmethod
    def _argmin(costs: list[tuple[tuple[float, float], int]]) -> int:
        return min(costs)[1]  # lexicographic on (c1, c2), then lowest id

    # -- Algorithm 1 ----------------------------------------------------------------------------
    def route_prefill(self, request: Request, ctx: RoutingContext) -> int:
        views = ctx.instances()
        cand = self.candidates(views, Role.PREFILL)
        costs = self.prefill_costs(request, cand, ctx)
        ttft = ctx.slo.ttft_s * self.config.ttft_headroom  # headroom 1.0 = the paper's test
        feasible = [c for c in costs if c[0][1] <= ttft]  # step 3: SLO ok iff c2 ≤ SLO_TTFT
        if feasible:
            return self._argmin(feasible)
        # Step 4: no prefill instance meets TTFT → flip D→P unless decode is overloaded (§5.5);
        # D→P is never cooldown-gated ("TTFT ... requires rapid instance scheduling").
        if self.enable_flips and not self.decode_overloaded(views, ctx):
            flipped = self._flip(ctx, views, Role.PREFILL)
            if flipped is not None:
                return flipped
        return self._argmin(costs)  # step 5: cheapest, SLO regardless

    def route_decode(self, request: Request, prefill_instance: int, ctx: RoutingContext) -> int:
        views = ctx.instances()
        # Step 1 ("line 3"): the prefill instance has since become a decode instance → decode in
        # place, no KV transfer.
        if views[prefill_instance].role is Role.DECODE:
            return prefill_instance
        cand = self.candidates(views, Role.DECODE)
        costs = self.decode_costs(request, cand, ctx)
        feasible = [c for c in costs if c[0][1] <= 0]  # step 3: the sign of c2 is the TPOT verdict
        if feasible:
            return self._argmin(feasible)
        # Step 4: no decode instance has TPOT capacity → flip P→D (Alg. 3, cooldown applies).
        if self.enable_flips:
            flipped = self._flip(ctx, views, Role.DECODE)
            if flipped is not None:
                return flipped
        return self._argmin(costs)  # step 5
