"""Latency model per (GPU, model, TP), fitted on real GPU profiles, and cluster presets."""

from arrow_rl.perf.model import LatencyModel
from arrow_rl.perf.preset import Preset
from arrow_rl.perf.presets import get_preset, list_presets
from arrow_rl.perf.profile import InstanceProfile, profile_instance

__all__ = ["LatencyModel", "Preset", "InstanceProfile", "get_preset", "list_presets", "profile_instance"]
