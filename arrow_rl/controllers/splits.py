"""Static P:D:M splits: what ``static-best`` searches (docs/design_mixed_role.md).

A split of N instances is P prefill, D decode and M MIXED instances, P + D + M = N, with P and D
both at least 1 (a disaggregated path) or both 0 (all-MIXED, which serves as ``colocated``). For
N instances there are (N−1)(N)/2 + 1 of them (29 for N = 8): too many for an exhaustive serving
rate search each, so ``static-best`` searches them coarse to fine (``coarse_mixed`` then
``neighbours``, ``arrow_rl.evaluation.seeded_search``). The lookahead oracle's candidate moves are
splits too (``arrow_rl.controllers.baselines``), reached by ``role_flips.flips_to_roles``.

A P/D-only split (M = 0) keeps today's spec (``static:P``) and JSON form (the integer P), so suite
files written before MIXED existed read back unchanged; a split with M ≥ 1 is ``static:P:D:M``
and ``"P:D:M"`` in JSON.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from arrow_rl.cluster.base import InstanceView, Role


class Split(NamedTuple):
    """P prefill, D decode, M MIXED instances."""

    p: int
    d: int
    m: int = 0

    @property
    def n(self) -> int:
        return self.p + self.d + self.m

    @property
    def spec(self) -> str:
        """The registry's controller name (``make_policy``)."""
        return f"static:{self.p}" if self.m == 0 else f"static:{self.p}:{self.d}:{self.m}"

    @property
    def label(self) -> str:
        """What tables print: ``7P:1D``, ``3P:1D:4M``, ``8M`` (all-MIXED)."""
        if self.p == self.d == 0:
            return f"{self.m}M"
        return f"{self.p}P:{self.d}D" + (f":{self.m}M" if self.m else "")

    def roles(self) -> dict[Role, int]:
        """The target of ``flips_to_roles``."""
        return {Role.PREFILL: self.p, Role.DECODE: self.d, Role.MIXED: self.m}

    @classmethod
    def of(cls, views: "list[InstanceView] | tuple[InstanceView, ...]") -> "Split":
        """The split a cluster's instance views are in now."""
        roles = [v.role for v in views]
        return cls(roles.count(Role.PREFILL), roles.count(Role.DECODE), roles.count(Role.MIXED))

    def to_json(self) -> int | str:
        """The integer P for a P/D split (the pre-MIXED format), else ``"P:D:M"``."""
        return self.p if self.m == 0 else f"{self.p}:{self.d}:{self.m}"

    def distance(self, other: "Split") -> int:
        """Flips that turn one split into the other (each flip moves one instance between pools)."""
        return (abs(self.p - other.p) + abs(self.d - other.d) + abs(self.m - other.m)) // 2


def is_valid(s: Split) -> bool:
    """P, D and M non-negative, and P and D both at least 1 or (all-MIXED) both 0."""
    return min(s) >= 0 and ((s.p >= 1 and s.d >= 1) or (s.p == s.d == 0 and s.m >= 1))


def split_from_json(value: Any, num_instances: int, where: str = "suite JSON") -> Split | None:
    """Read back ``Split.to_json`` (an integer P means P:(N−P):0); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{where}: best_split must be an integer P or 'P:D:M', got {value!r}")
    if isinstance(value, int):
        return Split(value, num_instances - value, 0)
    try:
        p, d, m = (int(x) for x in str(value).split(":"))
    except ValueError:
        raise ValueError(f"{where}: best_split must be an integer P or 'P:D:M', got {value!r}") from None
    return Split(p, d, m)


def pd_splits(n: int) -> list[Split]:
    """Today's P/D-only candidates: P in 1..N−1 (``expand_spec('static-best')``)."""
    return [Split(p, n - p, 0) for p in range(1, n)]


def all_splits(n: int) -> list[Split]:
    """Every P:D:M split of ``n`` instances (module docstring), P/D ones first."""
    out = pd_splits(n)
    for m in range(1, n - 1):
        out += [Split(p, n - m - p, m) for p in range(1, n - m)]
    return out + [Split(0, 0, n)]


def mixed_step(n: int) -> int:
    """The coarse grid's step over M and P: about a quarter of the cluster (2 on 8 instances, the
    design's choice; 4 on 16), so the coarse grid has O(16) splits whatever N is."""
    return max(1, round(n / 4))


def coarse_mixed(n: int, step: int | None = None) -> list[Split]:
    """The coarse grid over splits with a MIXED pool: M on ``step`` (plus all-MIXED), and for each
    M the prefill count on ``step`` with both ends (1 and N−M−1) kept."""
    step = step or mixed_step(n)
    out: list[Split] = []
    for m in range(step, n - 1, step):
        ps = sorted(set(range(1, n - m, step)) | {n - m - 1})
        out += [Split(p, n - m - p, m) for p in ps]
    return out + [Split(0, 0, n)]


def neighbours(s: Split, n: int) -> list[Split]:
    """Splits one flip away from ``s`` (one instance moved between two pools), valid ones only;
    from a split with one P and one D the all-MIXED split is a neighbour too (its pools empty
    together)."""
    moves = [(1, -1, 0), (-1, 1, 0), (1, 0, -1), (-1, 0, 1), (0, 1, -1), (0, -1, 1)]
    out = [Split(s.p + a, s.d + b, s.m + c) for a, b, c in moves]
    if s.p == s.d == 1:
        out.append(Split(0, 0, n))
    if s.p == s.d == 0:
        out.append(Split(1, 1, n - 2))
    return [x for x in out if x.n == n and is_valid(x)]
