"""The fewest flips that bring a live cluster to a target split, from its roles alone.

Used where only the role list is at hand: ``arrow-rl deploy --controller static:P[:D:M]`` before
its loop starts, and ``live_cluster_factory`` at each episode's reset. (The oracle plans on
instance views and profiles instead: ``arrow_rl.controllers.role_flips``.)
"""

from __future__ import annotations

from arrow_rl.cluster.base import Flip, Role


def flips_to_split(roles: list[Role], num_prefill: int) -> list[Flip]:
    """Fewest flips that leave exactly ``num_prefill`` prefill instances (lowest ids move first)."""
    prefill = [i for i, r in enumerate(roles) if r is Role.PREFILL]
    decode = [i for i, r in enumerate(roles) if r is Role.DECODE]
    if len(prefill) > num_prefill:
        return [Flip(i, Role.DECODE) for i in sorted(prefill, reverse=True)[: len(prefill) - num_prefill]]
    return [Flip(i, Role.PREFILL) for i in decode[: num_prefill - len(prefill)]]


def flips_to_roles(roles: list[Role], num_prefill: int, num_mixed: int) -> list[Flip]:
    """Fewest flips that leave ``num_prefill`` prefill, ``num_mixed`` MIXED and the rest decode
    instances (``static:P:D:M``). A role with too many gives up instances (MIXED its lowest ids,
    PREFILL and DECODE their highest); the lowest of those fill PREFILL, then DECODE, the highest
    MIXED, so MIXED instances end up last where they can, as in the emulator. One batch: the
    router validates the end state, not the steps."""
    target = {Role.PREFILL: num_prefill, Role.MIXED: num_mixed, Role.DECODE: len(roles) - num_prefill - num_mixed}
    if min(target.values()) < 0:
        raise ValueError(f"cannot split {len(roles)} instances into {num_prefill} prefill and {num_mixed} mixed")
    spare: list[int] = []
    for role in Role:
        ids = [i for i, r in enumerate(roles) if r is role]
        spare += sorted(ids, reverse=role is not Role.MIXED)[: max(0, len(ids) - target[role])]
    spare.sort()
    flips: list[Flip] = []
    for role in (Role.PREFILL, Role.DECODE, Role.MIXED):
        short = target[role] - sum(1 for r in roles if r is role)
        for _ in range(max(0, short)):
            flips.append(Flip(spare.pop(0), role))
    return flips
