"""arrow-rl's Gymnasium environments.

Importing this package registers the env ids (gymnasium 1.x has no plugin discovery):

- ``arrow_rl/PDCluster-v0``: the configurable env, preset to the Azure conversation trace at a
  contested load (rate scale 14-20, where Arrow is far from perfect); pass
  ``config=`` (an ``EnvConfig``, a mapping or a YAML path: replaces the preset) and/or field
  overrides as keyword arguments (merged over it).
- ``arrow_rl/PDCluster-AzureConv-v0``, ``-AzureCode-v0``, ``-Mooncake-v0``: windows of the bundled
  traces with SLOs suited to each (see ``docs/environment.md``).
- ``arrow_rl/PDCluster-PhaseShift-v0``: a synthetic workload whose prefill/decode mix alternates.

``gymnasium.make("envs:arrow_rl/PDCluster-v0")`` works without importing this package first.
"""

from __future__ import annotations

import gymnasium

from envs.actions import ActionCodec
from envs.config import ActionConfig, EnvConfig, EpisodeConfig, ObservationConfig, RewardConfig
from envs.observation import (FEATURE_NAMES, INSTANCE_FEATURE_NAMES, INSTANCE_FEATURES, OBSERVATION_FEATURES,
                              ObservationBuilder, frame_features)
from envs.moves import MoveCodec
from envs.pd_cluster_env import PDClusterEnv, make_encoders
from envs.pool_observation import POOL_FEATURE_NAMES, PoolObservationBuilder
from envs.reward import RewardTerms, step_reward

ENTRY_POINT = "envs.pd_cluster_env:PDClusterEnv"

# Per-variant config (merged over EnvConfig defaults). Rate-scale ranges straddle the load at which a
# static 4P4D split of 8 x H100 Llama-3.1-8B falls below 90% attainment with these SLOs, so the split
# matters (measurements in docs/environment.md "Variants").
_AZURE_CONV = {
    "slo_ttft_s": 2.0, "slo_tpot_s": 0.1,
    "episode": {"traces": ["azure-conv"], "duration_s": 120.0, "rate_scale": (10.0, 22.0), "drain_s": 60.0},
}
# The default id: the same trace and SLOs at a contested load, where the split decides the outcome and
# the Arrow heuristic is far from perfect (random / no-op / Arrow mean attainment 0.664 / 0.893 / 0.714
# on reset seeds 0-2, docs/environment.md), so a policy has something to learn. The AzureConv range
# below reaches light load at its low end (attainment 1.0 for every policy there).
_DEFAULT = {
    "slo_ttft_s": 2.0, "slo_tpot_s": 0.1,
    "episode": {"traces": ["azure-conv"], "duration_s": 120.0, "rate_scale": (14.0, 20.0), "drain_s": 60.0},
}
VARIANTS: dict[str, dict] = {
    "arrow_rl/PDCluster-v0": _DEFAULT,
    "arrow_rl/PDCluster-AzureConv-v0": _AZURE_CONV,
    "arrow_rl/PDCluster-AzureCode-v0": {
        "slo_ttft_s": 2.0, "slo_tpot_s": 0.1,
        "episode": {"traces": ["azure-code"], "duration_s": 120.0, "rate_scale": (8.0, 20.0), "drain_s": 60.0},
    },
    "arrow_rl/PDCluster-Mooncake-v0": {
        "slo_ttft_s": 10.0, "slo_tpot_s": 0.1,
        "episode": {"traces": ["mooncake"], "duration_s": 120.0, "rate_scale": (0.4, 2.0), "drain_s": 60.0},
    },
    "arrow_rl/PDCluster-PhaseShift-v0": {
        "slo_ttft_s": 2.0, "slo_tpot_s": 0.1,
        "episode": {"generator": {"kind": "phase_shift", "rate": 40.0, "duration_s": 120.0, "phase_s": 30.0},
                    "rate_scale": (1.0, 2.0), "drain_s": 60.0},
    },
}


def register_envs() -> None:
    """Register every id in ``VARIANTS`` (idempotent: ids already present are left alone)."""
    for env_id, cfg in VARIANTS.items():
        if env_id in gymnasium.registry:
            continue
        gymnasium.register(id=env_id, entry_point=ENTRY_POINT, kwargs={"config": cfg} if cfg else {},
                           disable_env_checker=False)


register_envs()

__all__ = [
    "ActionCodec", "ActionConfig", "EnvConfig", "EpisodeConfig", "ObservationConfig", "RewardConfig",
    "FEATURE_NAMES", "INSTANCE_FEATURE_NAMES", "INSTANCE_FEATURES", "OBSERVATION_FEATURES",
    "ObservationBuilder", "frame_features", "MoveCodec", "PoolObservationBuilder", "POOL_FEATURE_NAMES", "PDClusterEnv", "make_encoders", "RewardTerms", "step_reward", "VARIANTS",
    "register_envs",
]
