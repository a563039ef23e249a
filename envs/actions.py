"""Action encodings: an action says *how many* instances move between the pools; Arrow's
Algorithm 3 (``select_flip_instance``) says *which*.

Two encodings (``ActionConfig.kind``):

- ``discrete`` — ``Discrete(1 + 2K)``: 0 = no-op; ``k`` (1..K) = move k instances prefill→decode;
  ``K + k`` = move k instances decode→prefill. Its size does not depend on the cluster, so one
  policy can serve several cluster sizes.
- ``target`` — ``Discrete(max_instances + 1)``: the number of prefill instances wanted; the env
  moves ``|target − current|`` instances in one step.

Invalid actions (ones that would leave a pool with fewer than ``min_pool_size`` instances, Arrow
§5.5's "never empty a pool") are masked by ``masks`` and, if taken anyway, are no-ops.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
from gymnasium import spaces

from arrow_rl.cluster.base import Flip, InstanceView, Role
from arrow_rl.arrow.flip_selection import ProfileSource, select_flip_instance

from envs.config import ActionConfig


class ActionCodec:
    """Maps between action indices, prefill-count changes, and concrete ``Flip``s."""

    def __init__(self, config: ActionConfig, num_instances: int) -> None:
        self.config = config
        self.num_instances = num_instances
        self.max_instances = config.max_instances or num_instances
        self.K = config.max_flips_per_step
        self.min_pool = config.min_pool_size
        if config.kind == "discrete":
            self.space = spaces.Discrete(1 + 2 * self.K)
        else:
            self.space = spaces.Discrete(self.max_instances + 1)
        self._mask_table = [self._compute_masks(p) for p in range(num_instances + 1)]

    @property
    def noop(self) -> int:
        """An action index that never flips (for ``target`` it depends on the state: see ``noop_for``)."""
        return 0

    def noop_for(self, num_prefill: int) -> int:
        return 0 if self.config.kind == "discrete" else num_prefill

    def hold_for(self, views: Sequence[InstanceView]) -> int:
        """The action that keeps the split of ``views`` (a deploy-time margin compares moves with it)."""
        return self.noop_for(sum(1 for v in views if v.role is Role.PREFILL))

    def delta(self, action: int) -> int | None:
        """Change in the prefill count the discrete action asks for (+ = decode→prefill);
        None for ``target`` actions, whose delta depends on the current split."""
        if self.config.kind != "discrete":
            return None
        a = int(action)
        if a == 0:
            return 0
        if 1 <= a <= self.K:
            return -a
        return a - self.K

    def target_delta(self, action: int, num_prefill: int) -> int:
        if self.config.kind == "discrete":
            d = self.delta(action)
            assert d is not None
            return d
        return int(action) - num_prefill

    def is_valid(self, action: int, num_prefill: int) -> bool:
        if not self.space.contains(int(action)):
            return False
        new_p = num_prefill + self.target_delta(action, num_prefill)
        return self.min_pool <= new_p <= self.num_instances - self.min_pool

    def masks(self, num_prefill: int) -> np.ndarray:
        """Boolean mask over the action space: True where the action keeps both pools ≥ min size.
        A fresh array each call (callers may keep it); the table is computed once per split."""
        if not 0 <= num_prefill <= self.num_instances:
            raise ValueError(f"num_prefill={num_prefill} outside 0..{self.num_instances}")
        return self._mask_table[num_prefill].copy()

    def masks_for(self, views: Sequence[InstanceView]) -> np.ndarray:
        """``masks`` for the split of ``views`` (the interface ``envs.moves.MoveCodec`` shares)."""
        return self.masks(sum(1 for v in views if v.role is Role.PREFILL))

    def _compute_masks(self, num_prefill: int) -> np.ndarray:
        n = int(self.space.n)
        return np.fromiter((self.is_valid(a, num_prefill) for a in range(n)), dtype=bool, count=n)

    def flips(self, action: int, instances: Sequence[InstanceView], profiles: ProfileSource = None) -> list[Flip] | None:
        """Concrete flips for ``action``; None if the action is invalid in this state.

        Each flip's instance comes from Arrow Algorithm 3 on the views *after* the previous flips
        of this step (so a second P→D move takes the next-best prefill instance).
        """
        num_prefill = sum(1 for v in instances if v.role is Role.PREFILL)
        if not self.is_valid(action, num_prefill):
            return None
        delta = self.target_delta(action, num_prefill)
        target = Role.PREFILL if delta > 0 else Role.DECODE
        views = list(instances)
        index = {v.instance_id: j for j, v in enumerate(views)}
        out: list[Flip] = []
        for _ in range(abs(delta)):
            chosen = select_flip_instance(views, target, profiles, min_pool_size=self.min_pool)
            if chosen is None:  # unhealthy instances can make a count-valid action impossible
                break
            out.append(Flip(chosen, target))
            j = index[chosen]
            views[j] = replace(views[j], role=target)
        return out

    def encode(self, flips: Sequence[Flip], instances: Sequence[InstanceView]) -> int:
        """The action whose effect is closest to ``flips`` (e.g. a teacher controller's output):
        the net prefill-count change, clipped to what one action can express and to the pool guards."""
        roles = {v.instance_id: v.role for v in instances}
        num_prefill = sum(1 for r in roles.values() if r is Role.PREFILL)
        delta = 0
        for f in flips:
            current = roles.get(f.instance_id)
            if current is None or current is f.role:
                continue
            if Role.MIXED in (current, Role(f.role)):
                raise ValueError(f"the action codec encodes PREFILL<->DECODE flips only, got instance "
                                 f"{f.instance_id} {current.value}->{Role(f.role).value}")
            roles[f.instance_id] = f.role
            delta += 1 if f.role is Role.PREFILL else -1
        lo = self.min_pool - num_prefill
        hi = self.num_instances - self.min_pool - num_prefill
        delta = max(lo, min(hi, delta)) if lo <= hi else 0
        if self.config.kind == "target":
            return num_prefill + delta
        delta = max(-self.K, min(self.K, delta))
        if delta == 0:
            return 0
        return -delta if delta < 0 else self.K + delta
