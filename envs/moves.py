"""The three-role action codec: "move k instances from role X to role Y".

``Discrete(1 + 6·F)``: 0 = no-op; action ``1 + j·F + i`` moves ``k_i = ceil(f_i · N)`` instances along
the j-th ordered pair of ``PAIRS`` (P→D, D→P, P→M, M→P, D→M, M→D), f_i the i-th of
``ActionConfig.move_fractions``. The space does not depend on N, so one policy serves 4 to 32
instances. Which instances move is decided here (``pick_source``), not by the policy.

Rules (the paper is silent on MIXED; these are ours, docs/design_mixed_role.md):

- The P and D pools are both empty or both non-empty (the disaggregated path needs both), and a
  non-empty one keeps ``min_pool_size`` (Arrow §5.5's "never empty a pool"); since P + D + M = N,
  the cluster then always keeps a serving path.
- A move takes ``min(k, movable)`` instances: M→X takes what M has; P↔D keeps ``min_pool_size``.
- Crossing the boundary is atomic so that every split stays reachable: P→M or D→M with k at least
  the source pool's size *collapses* the disaggregated path (all of P and D go MIXED); M→P or M→D
  from an all-MIXED cluster *opens* one: max(k, 2) instances, one of them to the other role.
- An action that would move nothing, or break the rules, is masked (and a no-op if taken anyway).
- Two fractions can round to the same k on a small cluster (1/16 and 1/8 both give k = 1 for
  N <= 8): with ``distinct_moves`` only the first action of each (pair, k) is valid (``canonical``),
  so a policy and its teacher's labels see each distinct move once.
- Flips drain as every flip does (work already admitted finishes where it is, §5.2).

Which instance: Arrow Algorithm 3's cost generalised to three roles (``flip_cost``): prefer an
instance still holding work of the target phase, then the least resident work of the phase it
leaves (Σ T(rp) on a prefill instance, Σ L(rd) on a decode instance, prompt + decode tokens on a
MIXED one, the dispatcher's load rule); healthy instances only; ties to the lowest id. For P↔D this
is exactly Algorithm 3 (``arrow_rl.arrow.flip_selection``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import numpy as np
from gymnasium import spaces

from arrow_rl.arrow.flip_selection import ProfileSource, flip_cost
from arrow_rl.cluster.base import Flip, InstanceView, Role

from envs.config import ActionConfig

P, D, M = Role.PREFILL, Role.DECODE, Role.MIXED
PAIRS: tuple[tuple[Role, Role], ...] = ((P, D), (D, P), (P, M), (M, P), (D, M), (M, D))
Counts = tuple[int, int, int]


def role_counts(views: Sequence[InstanceView]) -> Counts:
    """(prefill, decode, mixed) instances."""
    p = d = m = 0
    for v in views:
        if v.role is P:
            p += 1
        elif v.role is D:
            d += 1
        else:
            m += 1
    return p, d, m


def move_cost(view: InstanceView, target: Role, profiles: ProfileSource) -> tuple[int, float]:
    """Algorithm 3's (half-flipped first, least resident work) cost for any source → target role."""
    if view.role is not M and target is not M:
        return flip_cost(view, target, profiles)   # Arrow Alg. 3 exactly for P<->D
    holds_target = {P: view.num_prefill > 0, D: view.num_decode > 0, M: False}[target]
    if view.role is M:
        residue = float(view.prefill_tokens + view.decode_tokens)
    else:
        residue = flip_cost(view, D if view.role is P else P, profiles)[1]
    return (0 if holds_target else 1, residue)


def pick_source(views: Sequence[InstanceView], source: Role, target: Role, profiles: ProfileSource) -> int | None:
    """The healthy ``source``-role instance that moves to ``target`` next (None: none is healthy)."""
    pool = [v for v in views if v.role is source and v.healthy]
    if not pool:
        return None
    return min(pool, key=lambda v: (move_cost(v, target, profiles), v.instance_id)).instance_id


class MoveCodec:
    """Maps action indices to role-count changes and to concrete ``Flip``s (module docstring)."""

    def __init__(self, config: ActionConfig, num_instances: int) -> None:
        if num_instances < 2:
            raise ValueError(f"the moves codec needs at least 2 instances, got {num_instances}")
        self.config = config
        self.num_instances = num_instances
        self.min_pool = config.min_pool_size
        self.fractions = list(config.move_fractions)
        self.ks = [max(1, math.ceil(f * num_instances - 1e-9)) for f in self.fractions]
        self.space = spaces.Discrete(1 + len(PAIRS) * len(self.fractions))
        self.distinct = bool(getattr(config, "distinct_moves", True))
        # fraction index -> the first index with the same k (the one label of that move)
        self._first_of_k = [self.ks.index(k) for k in self.ks]
        self._mask_cache: dict[Counts, np.ndarray] = {}

    noop = 0

    def noop_for(self, _num_prefill: int) -> int:
        return 0

    def hold_for(self, views: Sequence[InstanceView]) -> int:
        """The action that keeps the split of ``views``: the no-op."""
        return 0

    def describe(self, action: int) -> tuple[Role, Role, int] | None:
        """(source, target, k) of ``action``; None for the no-op."""
        a = int(action)
        if a == 0:
            return None
        j, i = divmod(a - 1, len(self.fractions))
        return PAIRS[j][0], PAIRS[j][1], self.ks[i]

    def canonical(self, action: int) -> int:
        """The action that labels ``action``'s move: the first one with the same pair and k when
        ``distinct_moves`` is on (equivalent actions are masked but for it), else ``action`` itself."""
        a = int(action)
        if a == 0 or not self.distinct:
            return a
        j, i = divmod(a - 1, len(self.fractions))
        return 1 + j * len(self.fractions) + self._first_of_k[i]

    def action_for(self, source: Role, target: Role, k: int) -> int:
        """The action moving ``source``→``target`` whose k is closest to ``k`` (ties: the smaller k,
        then the first fraction giving it: the ``canonical`` one)."""
        j = PAIRS.index((source, target))
        i = min(range(len(self.ks)), key=lambda i: (abs(self.ks[i] - k), self.ks[i]))
        return 1 + j * len(self.fractions) + i

    def result(self, action: int, counts: Counts) -> Counts | None:
        """The (P, D, M) split after ``action`` from ``counts``; None if it is invalid there."""
        move = self.describe(action)
        if move is None:
            return counts
        if self.canonical(action) != int(action):   # a duplicate of an earlier action's move
            return None
        src, dst, k = move
        c = {P: counts[0], D: counts[1], M: counts[2]}
        if src is M:
            if c[P] == 0 and c[D] == 0:          # open the disaggregated path: one to the other side
                n = max(k, 2)
                if c[M] < n or n - 1 < self.min_pool:
                    return None
                c[M] -= n
                c[dst] += n - 1
                c[D if dst is P else P] += 1
            else:
                n = min(k, c[M])
                c[M] -= n
                c[dst] += n
        elif dst is M:
            if c[src] == 0:
                return None
            if k >= c[src] or c[src] - k < self.min_pool:   # collapse: P and D go MIXED together
                c[M] += c[P] + c[D]
                c[P] = c[D] = 0
            else:
                c[src] -= k
                c[M] += k
        else:  # P <-> D: the source keeps min_pool_size
            n = min(k, c[src] - self.min_pool)
            if n <= 0:
                return None
            c[src] -= n
            c[dst] += n
        out = (c[P], c[D], c[M])
        return out if out != counts and self.valid_split(out) else None

    def valid_split(self, counts: Counts) -> bool:
        p, d, m = counts
        if min(p, d, m) < 0 or p + d + m != self.num_instances:
            return False
        if p == 0 and d == 0:
            return m > 0
        return p >= self.min_pool and d >= self.min_pool

    def masks_for(self, views: Sequence[InstanceView]) -> np.ndarray:
        """Valid actions for the split of ``views`` (a fresh array each call)."""
        return self.masks_counts(role_counts(views))

    def masks_counts(self, counts: Counts) -> np.ndarray:
        mask = self._mask_cache.get(counts)
        if mask is None:
            n = int(self.space.n)
            mask = np.fromiter((a == 0 or self.result(a, counts) is not None for a in range(n)), dtype=bool, count=n)
            self._mask_cache[counts] = mask
        return mask.copy()

    def is_valid(self, action: int, counts: Counts) -> bool:
        return self.space.contains(int(action)) and (int(action) == 0 or self.result(action, counts) is not None)

    def flips(self, action: int, instances: Sequence[InstanceView], profiles: ProfileSource = None) -> list[Flip] | None:
        """Concrete flips for ``action`` (None if invalid here). Each instance is chosen on the views
        after the previous flips of the step; an unhealthy pool can make the move fall short, and
        then no flip happens at all rather than a partial move that would break the pool rules."""
        counts = role_counts(instances)
        if not self.space.contains(int(action)):
            return None
        target = self.result(action, counts)
        if target is None:
            return None
        return self.flips_to_counts(instances, target, profiles)

    def flips_to_counts(self, instances: Sequence[InstanceView], target: Counts,
                        profiles: ProfileSource = None) -> list[Flip] | None:
        """The fewest flips from the current split to ``target`` (instances by ``pick_source``);
        None when unhealthy instances make it unreachable now."""
        views = list(instances)
        index = {v.instance_id: j for j, v in enumerate(views)}
        have = dict(zip((P, D, M), role_counts(views)))
        want = dict(zip((P, D, M), target))
        out: list[Flip] = []
        # a pool with a surplus gives to pools with a deficit; for each deficit take from surplus pools
        for dst in (P, D, M):
            for src in (M, D, P) if dst is not M else (P, D):
                while want[dst] > have[dst] and have[src] > want[src]:
                    chosen = pick_source(views, src, dst, profiles)
                    if chosen is None:
                        return None
                    out.append(Flip(chosen, dst))
                    views[index[chosen]] = replace(views[index[chosen]], role=dst)
                    have[src] -= 1
                    have[dst] += 1
        return out

    def encode(self, flips: Sequence[Flip], instances: Sequence[InstanceView]) -> int:
        """The valid action whose resulting split is closest (L1 over P, D, M counts) to the split
        ``flips`` lead to (e.g. a teacher controller's output); ties prefer the no-op, then the smaller move."""
        roles = {v.instance_id: v.role for v in instances}
        for f in flips:
            if f.instance_id in roles:
                roles[f.instance_id] = Role(f.role)
        want = (sum(r is P for r in roles.values()), sum(r is D for r in roles.values()),
                sum(r is M for r in roles.values()))
        return self.nearest_action(role_counts(instances), want)

    def nearest_action(self, counts: Counts, want: Counts) -> int:
        """The valid action from ``counts`` whose resulting split is closest (L1) to ``want``; ties
        prefer the no-op, then the smaller move, then the lower index."""
        if want == counts:
            return 0
        best, best_key = 0, None
        for a in range(int(self.space.n)):
            res = counts if a == 0 else self.result(a, counts)
            if res is None:
                continue
            dist = sum(abs(x - y) for x, y in zip(res, want))
            moved = sum(abs(x - y) for x, y in zip(res, counts))
            key = (dist, moved, a)
            if best_key is None or key < best_key:
                best, best_key = a, key
        return best
