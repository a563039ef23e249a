"""The per-request router slot shared by the emulator and the live router.

A router places each request's prefill leg at arrival and its decode leg when the first token is
out (Arrow §5.3 schedules the two sub-requests separately). Arrow's Algorithm 1 may also flip an
instance while routing, so the context offers ``flip``.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from arrow_rl.cluster.base import SLO, InstanceView, Role
from arrow_rl.perf.profile import InstanceProfile
from arrow_rl.workload.workload import Request


class RoutingContext(Protocol):
    """The cluster as a router sees it at one instant."""

    @property
    def now(self) -> float: ...

    @property
    def slo(self) -> SLO: ...

    def instances(self) -> Sequence[InstanceView]: ...

    def flip(self, instance_id: int, role: Role) -> None: ...

    def profile(self, instance_id: int) -> InstanceProfile:
        """Arrow §5.2 capability profile of an instance (prefill-time and decode-interval fits)."""
        ...


class RequestRouter(Protocol):
    """Chooses instances for prefill and decode legs."""

    name: str

    def reset(self, num_instances: int) -> None:
        """Forget per-run state (round-robin cursors, flip timestamps)."""
        ...

    def route_prefill(self, request: Request, ctx: RoutingContext) -> int:
        """Instance id that computes the prompt of ``request``."""
        ...

    def route_decode(self, request: Request, prefill_instance: int, ctx: RoutingContext) -> int:
        """Instance id that generates the remaining tokens; ``prefill_instance`` means no KV transfer."""
        ...
