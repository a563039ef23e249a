"""Latency model per (GPU, model, TP), fitted on real GPU profiles, and cluster presets."""

from arrow_rl.perf.model import LatencyModel

__all__ = ["LatencyModel"]
