"""Instance-scheduling controllers: Arrow (§5.5), baselines, Algorithm 3 and the policy registry."""

from arrow_rl.controllers.arrow import ArrowConfig, ArrowIntervalController, ArrowMonitor, ArrowState
from arrow_rl.controllers.baselines import (DynamoConfig, DynamoPlannerController, NoFlipController, OracleConfig,
                                            OracleController)
from arrow_rl.controllers.flip_selection import select_flip_instance
from arrow_rl.controllers.registry import Policy, expand_spec, make_policy

__all__ = ["ArrowConfig", "ArrowIntervalController", "ArrowMonitor", "ArrowState", "DynamoConfig",
           "DynamoPlannerController", "NoFlipController", "OracleConfig", "OracleController", "Policy",
           "expand_spec", "make_policy", "select_flip_instance"]
