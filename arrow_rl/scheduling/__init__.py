"""Per-request routers shared by the emulator and the live router."""

from arrow_rl.scheduling.base import RequestRouter, RoutingContext

__all__ = ["RequestRouter", "RoutingContext"]
