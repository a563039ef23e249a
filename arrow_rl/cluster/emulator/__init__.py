"""The discrete-event PD-cluster emulator (see docs/emulator.md)."""

from arrow_rl.cluster.emulator.cluster import EmulatedCluster
from arrow_rl.cluster.emulator.config import EmulatorConfig

__all__ = ["EmulatedCluster", "EmulatorConfig"]
