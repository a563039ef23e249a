"""The target-split action codec (``action.kind: splits``): "go to this P:D:M split".

``Discrete(1 + L)``: 0 = hold (no flip); action ``1 + i`` names the i-th split of a lattice of the
pool in units of N / ``split_grid`` (P, D, M ≥ 0 summing to the grid, P and D both zero or both
non-zero: 29 splits on the default 8-unit grid). The space does not depend on N; each lattice split
is rounded to instances for the cluster at hand (``lattice_counts``), and the whole re-split is
applied at once, each flip draining as every flip does (§5.2), which is the jump the
``oracle-split`` teacher scores on its clones (``envs.split_teacher``).

Why a second three-role codec: with ``moves`` a label says "one step from where you are toward the
teacher's target", so it depends on the current split as much as on the traffic, and a student that
errs once reaches splits whose labels it never saw (its agreement with the teacher on its own states
fell from 0.83 to 0.66). A split label says *where to be*, the same whatever the current split, so
one error does not change what the next label is. The pool rules are ``envs.moves``' (both P and D
keep ``min_pool_size`` when non-empty; all-MIXED is colocated); which instances flip is the moves
codec's ``pick_source`` (Algorithm 3's cost generalised to three roles).
"""

from __future__ import annotations

from typing import Sequence

from gymnasium import spaces

from arrow_rl.cluster.base import InstanceView

from envs.config import ActionConfig
from envs.moves import Counts, MoveCodec, role_counts

Lattice = tuple[int, int, int]


def split_lattice(grid: int) -> list[Lattice]:
    """The valid (P, D, M) splits of ``grid`` units: P and D both zero (all MIXED) or both ≥ 1."""
    out: list[Lattice] = []
    for pu in range(grid + 1):
        for du in range(grid + 1 - pu):
            if (pu == 0) == (du == 0):
                out.append((pu, du, grid - pu - du))
    return out


def lattice_counts(point: Lattice, grid: int, num_instances: int, min_pool: int) -> Counts | None:
    """``point`` rounded to instances: a non-empty P or D pool keeps ``min_pool`` (rounding must not
    empty it), MIXED takes the rest; None when the cluster is too small for the point's P and D."""
    pu, du, _mu = point
    n = num_instances
    p = max(min_pool, round(pu * n / grid)) if pu else 0
    d = max(min_pool, round(du * n / grid)) if du else 0
    while p + d > n:   # both at least min_pool: shrink the larger one
        if p >= d and p > min_pool:
            p -= 1
        elif d > min_pool:
            d -= 1
        else:
            return None
    return p, d, n - p - d


class SplitCodec(MoveCodec):
    """Maps action indices to target splits and to the flips that reach them (module docstring).

    Shares ``MoveCodec``'s pool rules, ``flips``, ``is_valid`` and ``encode``; what differs is the space,
    what an action means (``result``) and which action is nearest a wanted split (``nearest_action``)."""

    def __init__(self, config: ActionConfig, num_instances: int) -> None:
        super().__init__(config, num_instances)
        self.grid = config.split_grid
        self.lattice = split_lattice(self.grid)
        self.targets: list[Counts | None] = [
            lattice_counts(pt, self.grid, num_instances, self.min_pool) for pt in self.lattice]
        self.space = spaces.Discrete(1 + len(self.lattice))
        self._mask_cache = {}

    def describe(self, action: int) -> None:
        """Split actions are not moves (see ``target_of``)."""
        return None

    def canonical(self, action: int) -> int:
        """Every split action labels itself (moves' fraction duplicates do not arise here; lattice
        points that round to one split on a small cluster are a separate matter)."""
        return int(action)

    def target_of(self, action: int) -> Counts | None:
        """The (P, D, M) split action ``action`` names on this cluster (None: hold, or unreachable)."""
        a = int(action)
        return None if a == 0 else self.targets[a - 1]

    def result(self, action: int, counts: Counts) -> Counts | None:
        """The split after ``action`` from ``counts``: the named split (or ``counts`` when it is the
        current one: naming where you are is a valid hold), ``counts`` for 0, None if invalid."""
        a = int(action)
        if a == 0:
            return counts
        target = self.targets[a - 1]
        return target if target is not None and self.valid_split(target) else None

    def hold_for(self, views: Sequence[InstanceView]) -> int:
        """The action that keeps the split of ``views``: the one naming it (what a student trained on
        split labels says to stay), or 0 when it is off the lattice."""
        counts = role_counts(views)
        return self.nearest_action(counts, counts)

    def nearest_action(self, counts: Counts, want: Counts) -> int:
        """The action naming the split closest to ``want`` (L1 over instance counts, then over pool
        fractions against the lattice point, then the lower index); 0 (hold) only when ``want`` is
        the current split and no lattice split reaches it exactly (an off-lattice split held)."""
        n = self.num_instances
        best, best_key = 0, None
        for i, (target, point) in enumerate(zip(self.targets, self.lattice)):
            if target is None or not self.valid_split(target):
                continue
            dist = sum(abs(x - y) for x, y in zip(target, want))
            frac = sum(abs(u / self.grid - w / n) for u, w in zip(point, want))
            key = (dist, frac, i)
            if best_key is None or key < best_key:
                best, best_key = i + 1, key
        if best_key is not None and best_key[0] > 0 and want == counts:
            return 0
        return best


def three_role_codec(config: ActionConfig, num_instances: int) -> MoveCodec:
    """The codec of a three-role ``action.kind`` (``moves`` or ``splits``) for ``num_instances``."""
    if config.kind == "splits":
        return SplitCodec(config, num_instances)
    if config.kind == "moves":
        return MoveCodec(config, num_instances)
    raise ValueError(f"action.kind={config.kind!r} is not a three-role encoding ('moves' or 'splits')")


__all__ = ["SplitCodec", "lattice_counts", "split_lattice", "three_role_codec"]
