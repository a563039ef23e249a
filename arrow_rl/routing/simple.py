"""Baseline request routers: round-robin and least-loaded.

Both honour roles in disaggregated mode (prefill legs go to PREFILL-labelled instances, decode legs
to DECODE-labelled ones; Arrow §5.2 roles are routing labels) and skip instances that are not
``healthy`` (e.g. inside a flip delay) unless nothing else is left. In colocated mode (a context
whose ``mode`` is ``Mode.COLOCATED``) every instance takes whole requests.
"""

from __future__ import annotations

from typing import Sequence

from arrow_rl.cluster.base import InstanceView, Mode, Role
from arrow_rl.routing.base import RoutingContext
from arrow_rl.workload.workload import Request


def _colocated(ctx: RoutingContext) -> bool:
    return getattr(ctx, "mode", Mode.DISAGGREGATED) is Mode.COLOCATED


def candidates(views: Sequence[InstanceView], role: Role | None) -> list[InstanceView]:
    """Healthy instances of ``role`` (any role if None); falls back to all healthy, then to all."""
    healthy = [v for v in views if v.healthy] or list(views)
    if role is None:
        return healthy
    return [v for v in healthy if v.role is role] or healthy


class RoundRobinRouter:
    """Cycles through the candidate pool, one cursor per phase."""

    name = "round-robin"

    def __init__(self) -> None:
        self._cursor = {"prefill": 0, "decode": 0}

    def reset(self, num_instances: int) -> None:
        self._cursor = {"prefill": 0, "decode": 0}

    def _pick(self, pool: list[InstanceView], key: str) -> int:
        i = self._cursor[key] % len(pool)
        self._cursor[key] = i + 1
        return pool[i].instance_id

    def route_prefill(self, request: Request, ctx: RoutingContext) -> int:
        role = None if _colocated(ctx) else Role.PREFILL
        return self._pick(candidates(ctx.instances(), role), "prefill")

    def route_decode(self, request: Request, prefill_instance: int, ctx: RoutingContext) -> int:
        if _colocated(ctx):
            return prefill_instance
        return self._pick(candidates(ctx.instances(), Role.DECODE), "decode")


class LeastLoadedRouter:
    """Prefill legs → the prefill instance with the fewest prompt tokens still to compute; decode
    legs → the decode instance with the fewest resident decode tokens (Σ L(r)); colocated → the
    instance with the least total work (prompt tokens to compute + decode tokens). Ties → lowest id."""

    name = "least-loaded"

    def reset(self, num_instances: int) -> None:
        pass

    def route_prefill(self, request: Request, ctx: RoutingContext) -> int:
        views = ctx.instances()
        if _colocated(ctx):
            pool = candidates(views, None)
            return min(pool, key=lambda v: (v.prefill_tokens + v.decode_tokens, v.instance_id)).instance_id
        pool = candidates(views, Role.PREFILL)
        return min(pool, key=lambda v: (v.prefill_tokens, v.instance_id)).instance_id

    def route_decode(self, request: Request, prefill_instance: int, ctx: RoutingContext) -> int:
        if _colocated(ctx):
            return prefill_instance
        pool = candidates(ctx.instances(), Role.DECODE)
        return min(pool, key=lambda v: (v.decode_tokens, v.instance_id)).instance_id
