"""``flips_to_roles``: the fewest flips that bring a cluster to a target P:D:M split.

Three-role generalisation of "flips to a prefill count" (the oracle's moves, the live deploy's
``flips_to_split``), for any caller that plans in splits: the oracle's candidates, an action codec
that outputs target pool sizes (docs/design_mixed_role.md).

Fewest flips: only instances of a pool above its target move, each straight to a pool below its
target, so the count is Σ max(0, current − target) over the three pools. With three pools the
pairing is forced (one surplus pool feeding one or two deficit pools, or two feeding one); the
order is P→D, D→P, then the moves into and out of MIXED, each pool's surplus leaving in turn.

Which instance moves (the paper is silent beyond P<->D):

- P<->D: Arrow Algorithm 3 (§5.5, ``flip_cost``): instances still holding work of the target
  phase first, then the least resident work of the phase left; ties to the lowest id. A P/D-only
  target therefore gives exactly the flips of repeated ``select_flip_instance``, its guard
  included (a pool the target keeps non-empty never loses its last healthy instance).
- into MIXED: the least resident work of the phase left (Σ T(rp) from P, decode tokens from D):
  a MIXED instance serves both phases, so no instance holds "the wrong" work.
- out of MIXED: the least resident work, prompt tokens to compute plus decode tokens (the
  dispatcher's own load rule, ``MixedDispatcher.pick_mixed``).

Only healthy instances move (one inside a flip delay is mid-flip). A pool the target empties may
lose its last instance (the path to all-MIXED); a move that has no healthy instance to take, or
would break the guard, is dropped, so the result may fall short of the target (as Algorithm 3's
null does).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from arrow_rl.arrow.flip_selection import ProfileSource, flip_cost, profile_of, resident_prefill_time
from arrow_rl.cluster.base import Flip, InstanceView, Role

_P, _D, _M = Role.PREFILL, Role.DECODE, Role.MIXED
# the order moves are planned in: P<->D first (Algorithm 3's own moves), then MIXED ones
_MOVES = ((_P, _D), (_D, _P), (_P, _M), (_D, _M), (_M, _P), (_M, _D))


def move_cost(view: InstanceView, target: Role, profiles: ProfileSource = None) -> tuple[int, float]:
    """Cost of moving ``view`` to ``target`` (module docstring), compared lexicographically."""
    src = view.role
    if src is _M:
        return (1, float(view.prefill_tokens + view.decode_tokens))
    if target is _M:
        if src is _P:
            return (1, resident_prefill_time(view, profile_of(profiles, view.instance_id)))
        return (1, float(view.decode_tokens))
    return flip_cost(view, target, profiles)   # Arrow Algorithm 3 (§5.5)


def flips_to_roles(views: Sequence[InstanceView], target: Mapping[Role, int],
                   profiles: ProfileSource = None) -> list[Flip]:
    """The fewest flips from ``views``' roles to ``target`` pool sizes (module docstring).

    ``target`` maps PREFILL, DECODE and MIXED (absent: 0) to counts that add up to the number of
    instances; anything else is a ``ValueError`` naming the target.
    """
    want = {r: int(target.get(r, 0)) for r in (_P, _D, _M)}
    unknown = [r for r in target if r not in want]
    if unknown or min(want.values()) < 0 or sum(want.values()) != len(views):
        shown = {getattr(r, "value", r): k for r, k in target.items()}
        raise ValueError(f"target split {shown} must give prefill, decode and mixed counts >= 0 adding up to "
                         f"{len(views)} instances")
    views = list(views)
    have = {r: sum(1 for v in views if v.role is r) for r in want}
    surplus = {r: max(0, have[r] - want[r]) for r in want}
    deficit = {r: max(0, want[r] - have[r]) for r in want}
    flips: list[Flip] = []
    for src, dst in _MOVES:
        k = min(surplus[src], deficit[dst])
        for _ in range(k):
            pool = [v for v in views if v.role is src and v.healthy]
            # never leave a pool the target keeps non-empty without a healthy instance (Alg. 3's guard)
            if not pool or (want[src] >= 1 and len(pool) <= 1):
                break
            chosen = min(pool, key=lambda v: (move_cost(v, dst, profiles), v.instance_id))
            flips.append(Flip(chosen.instance_id, dst))
            views = [_relabel(v, dst) if v.instance_id == chosen.instance_id else v for v in views]
        surplus[src] -= k
        deficit[dst] -= k
    return flips


def _relabel(v: InstanceView, role: Role) -> InstanceView:
    from dataclasses import replace

    return replace(v, role=role)
