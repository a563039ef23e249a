"""Arrow (arXiv 2505.11916) in one place: configuration, the router (Algorithm 1, §5.3), the
monitor (Algorithm 2, §5.5) and flip selection (Algorithm 3, §5.5). docs/arrow.md maps every rule
to its section. ``mixed`` is ours, not the paper's: the MIXED-pool dispatcher in front of
Algorithm 1 (docs/design_mixed_role.md)."""

from arrow_rl.arrow.config import ArrowConfig, ArrowState, FlipEvent
from arrow_rl.arrow.flip_selection import select_flip_instance
from arrow_rl.arrow.mixed import MixedConfig, MixedDispatcher
from arrow_rl.arrow.monitor import ArrowIntervalController, ArrowMonitor, default_profiles, with_role
from arrow_rl.arrow.router import ArrowRouter

__all__ = ["ArrowConfig", "ArrowIntervalController", "ArrowMonitor", "ArrowRouter", "ArrowState", "FlipEvent",
           "MixedConfig", "MixedDispatcher", "default_profiles", "select_flip_instance", "with_role"]
