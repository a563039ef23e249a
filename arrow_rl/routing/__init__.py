"""Per-request routers shared by the emulator and the live router, and a name registry."""

from __future__ import annotations

from typing import Callable

from arrow_rl.routing.base import RequestRouter, RoutingContext
from arrow_rl.routing.simple import LeastLoadedRouter, RoundRobinRouter

ROUTERS: dict[str, Callable[[], RequestRouter]] = {
    "least-loaded": LeastLoadedRouter,
    "round-robin": RoundRobinRouter,
    "arrow": lambda: __import__("arrow_rl.arrow.router", fromlist=["ArrowRouter"]).ArrowRouter(),  # Alg. 1 with flips
    "arrow-noflip": lambda: __import__("arrow_rl.arrow.router", fromlist=["ArrowRouter"]).ArrowRouter(enable_flips=False),
}


def register_router(name: str, factory: Callable[[], RequestRouter]) -> None:
    """Add a router under ``name`` (e.g. ``"arrow"``)."""
    ROUTERS[name] = factory


def router_names() -> list[str]:
    return sorted(ROUTERS)


def make_router(name: str) -> RequestRouter:
    """A fresh router by name; unknown names raise ``ValueError`` listing the valid ones."""
    try:
        factory = ROUTERS[name]
    except KeyError:
        raise ValueError(f"unknown router {name!r}; valid routers: {', '.join(router_names())}") from None
    return factory()


__all__ = ["LeastLoadedRouter", "ROUTERS", "RequestRouter", "RoundRobinRouter", "RoutingContext",
           "make_router", "register_router", "router_names"]
