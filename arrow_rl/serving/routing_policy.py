"""The live router's routing policies by name, and the ``RoutingContext`` they run on: the
router's own bookkeeping, so any ``RequestRouter`` (Arrow's Algorithm 1 above all) routes on live
instance state. The router puts the emulator's ``MixedDispatcher`` (arrow_rl.arrow.mixed) in front
of the policy named here, so MIXED instances get plain requests by the same rule on both backends.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any, Callable, Sequence

from arrow_rl.arrow.config import ArrowState
from arrow_rl.arrow.router import ArrowRouter
from arrow_rl.cluster.base import SLO, InstanceView, Role
from arrow_rl.cluster.live.state import FlipError, RouterState
from arrow_rl.perf.profile import InstanceProfile
from arrow_rl.workload.workload import Request

ROUTING_POLICIES = ("arrow", "arrow-noflip", "least-loaded")


class LiveRoutingContext:
    """``RoutingContext`` backed by ``RouterState``. ``flip`` applies Algorithm 1's flips to the
    pools immediately (same event-loop turn, so atomic) and ignores flips that would empty a pool."""

    def __init__(self, state: RouterState, slo: SLO, profiles: Callable[[int], InstanceProfile],
                 on_flip: Callable[[int, Role], None] | None = None) -> None:
        self._state = state
        self._slo = slo
        self._profiles = profiles
        self._on_flip = on_flip

    @property
    def now(self) -> float:
        return self._state.now()

    @property
    def slo(self) -> SLO:
        return self._slo

    def instances(self) -> Sequence[InstanceView]:
        return self._state.views()

    def live_instances(self) -> Sequence[Any]:
        """The router's own ``InstanceState`` objects, no snapshot: for a policy that only reads
        them within one call (``LeastLoadedRouter``), it spares one ``InstanceView`` per instance
        per routed leg."""
        return self._state.instances

    def num_mixed(self) -> int:
        """Instances labelled MIXED (``MixedDispatcher`` skips its dispatch when there are none)."""
        return self._state.num_mixed

    def flip(self, instance_id: int, role: Role) -> None:
        try:
            done = self._state.apply_flips([(instance_id, Role(role))], source="alg1")
        except FlipError:
            return
        if done and self._on_flip is not None:
            self._on_flip(instance_id, Role(role))

    def profile(self, instance_id: int) -> InstanceProfile:
        return self._profiles(instance_id)


class LeastLoadedRouter:
    """Baseline routing: the healthy pool member with the fewest in-flight tokens of the leg's
    phase (prefill: Σ queued prompt tokens; decode: Σ decode context tokens). Empty pool → all."""

    name = "least-loaded"

    def reset(self, num_instances: int) -> None:
        pass

    @staticmethod
    def _instances(ctx: Any) -> Sequence[Any]:
        live = getattr(ctx, "live_instances", None)
        return live() if live is not None else ctx.instances()

    @staticmethod
    def _pick(views: Sequence[Any], role: Role, key: Callable[[Any], tuple]) -> int:
        healthy = [v for v in views if v.healthy] or list(views)
        pool = [v for v in healthy if v.role is role] or healthy
        return min(pool, key=key).instance_id

    def route_prefill(self, request: Request, ctx: Any) -> int:
        return self._pick(self._instances(ctx), Role.PREFILL, _PREFILL_KEY)

    def route_decode(self, request: Request, prefill_instance: int, ctx: Any) -> int:
        return self._pick(self._instances(ctx), Role.DECODE, _DECODE_KEY)


# Least-loaded order (ties: lowest id), read from an InstanceView or an InstanceState alike.
_PREFILL_KEY = attrgetter("prefill_tokens", "num_prefill", "instance_id")
_DECODE_KEY = attrgetter("decode_tokens", "num_decode", "instance_id")


def make_live_router(name: str, max_flips: int = 10_000) -> Any:
    """The routing policy by name: ``arrow`` (Algorithm 1 with its D→P/P→D flips), ``arrow-noflip``
    (Algorithm 1 placement only; a separate controller owns flips), ``least-loaded``. Arrow's flip
    log keeps the newest ``max_flips`` (``RouterConfig.max_flips``): the router runs for days."""
    if name == "least-loaded":
        return LeastLoadedRouter()
    if name in ("arrow", "arrow-noflip"):
        return ArrowRouter(state=ArrowState(flip_log_limit=max_flips), enable_flips=(name == "arrow"))
    raise ValueError(f"unknown routing policy {name!r}; choose one of {', '.join(ROUTING_POLICIES)}")
