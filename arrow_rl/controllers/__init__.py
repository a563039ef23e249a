"""Instance-scheduling baselines and the policy registry (Arrow itself lives in ``arrow_rl.arrow``)."""

from arrow_rl.controllers.baselines import (DynamoConfig, DynamoPlannerController, NoFlipController, OracleConfig,
                                            OracleController)
from arrow_rl.controllers.registry import Policy, expand_spec, make_policy, register_checkpoint_loader

__all__ = ["DynamoConfig", "DynamoPlannerController", "NoFlipController", "OracleConfig", "OracleController",
           "Policy", "expand_spec", "make_policy", "register_checkpoint_loader"]
