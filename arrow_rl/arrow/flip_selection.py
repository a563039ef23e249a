"""Arrow Algorithm 3: which instance flips (§5.5).

A pure function over instance views so that the event-driven router (Algorithm 1 step 4), the
interval controllers (Algorithm 2) and the Gymnasium environment all pick the same instance for
the same state. Cooldown is *not* decided here: it is a property of the caller's clock
(``ArrowState``), while this function only answers "if a flip towards ``target`` happens now,
which instance moves?".
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, Union

from arrow_rl.cluster.base import InstanceView, Role
from arrow_rl.perf.profile import InstanceProfile

ProfileSource = Union[
    InstanceProfile,
    Sequence[InstanceProfile],
    Mapping[int, InstanceProfile],
    Callable[[int], InstanceProfile],
    None,
]


def profile_of(profiles: ProfileSource, instance_id: int) -> InstanceProfile | None:
    """Resolve the profile of ``instance_id`` from any of the accepted forms (one shared profile
    for a homogeneous cluster, a per-instance sequence/mapping, or ``ctx.profile``)."""
    if profiles is None or isinstance(profiles, InstanceProfile):
        return profiles
    if callable(profiles):
        return profiles(instance_id)
    return profiles[instance_id]  # type: ignore[index]


def resident_prefill_time(view: InstanceView, profile: InstanceProfile | None) -> float:
    """Σ_{rp∈P_i} T(rp, i) (Arrow §5.3/§5.5). Without a profile, fall back to resident prefill
    tokens, which orders instances of one type the same way when prompts are similar."""
    if profile is None:
        return float(view.prefill_tokens)
    return profile.prefill_time_sum(view.num_prefill, view.prefill_tokens, view.prefill_tokens_sq)


def flip_cost(view: InstanceView, target: Role, profiles: ProfileSource) -> tuple[int, float]:
    """Arrow Algorithm 3 flip cost, compared lexicographically.

    First component: 0 if the instance still holds work of the *target* phase (a "half-flipped"
    instance whose earlier flip is not complete, §5.5), else 1. Second: the resident work of the
    phase it is leaving (Σ T(rp) for a prefill instance, Σ L(rd) for a decode instance).
    """
    if target is Role.DECODE:  # leaving the prefill pool
        holds_target_work = view.num_decode > 0
        residue = resident_prefill_time(view, profile_of(profiles, view.instance_id))
    else:  # leaving the decode pool
        holds_target_work = view.num_prefill > 0
        residue = float(view.decode_tokens)
    return (0 if holds_target_work else 1, residue)


def select_flip_instance(
    instances: Sequence[InstanceView],
    target_role: Role,
    profiles: ProfileSource = None,
    min_pool_size: int = 1,
) -> int | None:
    """Arrow Algorithm 3: the instance to flip to ``target_role``, or None if no flip may happen.

    - The source pool is every healthy instance currently labelled ``target_role.other()``.
    - Never empty a pool (§5.5, the |S| ≤ 1 guard): a flip needs the source pool to keep at least
      ``min_pool_size`` instances afterwards (default 1, the paper's guard).
    - Prefer instances still holding work of the target phase, then the least resident work of the
      source phase; ties go to the lowest instance id (deterministic).
    """
    target_role = Role(target_role)
    source = [v for v in instances if v.role is target_role.other() and v.healthy]
    if len(source) <= min_pool_size:  # Arrow Alg. 3: |S| ≤ 1 → null (never empty a pool)
        return None
    best = min(source, key=lambda v: (flip_cost(v, target_role, profiles), v.instance_id))
    return best.instance_id
