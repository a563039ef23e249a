"""``CheckpointController``: a trained policy in the ``Controller`` seat.

It computes exactly what ``PDClusterEnv`` computed during training, from the ``ControlState`` alone:
the observation with ``envs.observation.ObservationBuilder`` (same config, same history), the valid
actions with ``envs.actions.ActionCodec`` (never empty a pool), the deterministic masked-greedy
action of the network (held at the no-op unless a move beats it by the checkpoint's
``inference.move_margin``, a deploy-time setting: 0 inside training), and the concrete flips
through Arrow Algorithm 3 (which instance moves).
So the same object runs in ``arrow-rl evaluate``, inside the env, and against a live cluster.

SECURITY: loading unpickles the SB3 ``model.zip`` (and ``vecnormalize.pkl``); load only checkpoints
you trust.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from arrow_rl.cluster.base import SLO, ClusterInfo, Flip
from arrow_rl.control import ControlState

from agents.inference import hold_unless_confident
from agents.checkpoint import Checkpoint, CheckpointError, CheckpointMismatchError, load_checkpoint, read_metadata


def check_cluster(meta: dict[str, Any], info: ClusterInfo, source: str) -> None:
    """Raise ``CheckpointMismatchError`` naming each way the cluster does not fit the checkpoint.

    Checked: cluster size vs the padding size the observation was built for (``max_instances``;
    the ``cluster_size`` feature is n / max_instances), and the observation size and action space
    the env config implies for this cluster vs the ones stored in the model.
    """
    if "env_config" not in meta or "max_instances" not in meta:
        raise CheckpointMismatchError(
            f"{source} was not trained on PDClusterEnv (env_id {meta.get('env_id')!r}); it cannot control a cluster"
        )
    problems = []
    max_instances = int(meta["max_instances"])
    size_free = (meta.get("env_config") or {}).get("observation", {}).get("kind") == "pools"
    if info.num_instances > max_instances and not size_free:   # pools: no padding, any size runs
        problems.append(f"cluster has {info.num_instances} instances but the checkpoint supports at most "
                        f"max_instances={max_instances} (trained on {meta.get('num_instances')})")
    if info.mode.value != "disaggregated":
        problems.append(f"cluster mode {info.mode.value!r}: a checkpoint controls prefill/decode roles, "
                        "it needs a disaggregated cluster")
    roles = getattr(info, "initial_roles", None) or ()
    if not size_free and any(getattr(r, "value", r) == "mixed" for r in roles):
        problems.append("the cluster has MIXED instances but the checkpoint knows prefill and decode only "
                        "(a three-role checkpoint has action.kind 'moves')")
    if problems:
        raise CheckpointMismatchError(f"{source} does not fit this cluster: " + "; ".join(problems))


class CheckpointController:
    """A ``Controller`` backed by a trained SB3 policy (see module docstring)."""

    def __init__(self, checkpoint: Checkpoint, name: str | None = None) -> None:
        self.checkpoint = checkpoint
        self.metadata = checkpoint.metadata
        self.name = name or f"ckpt:{checkpoint.directory.name}"
        self._builder = None
        self._codec = None
        self._profiles = None
        self._source = str(checkpoint.directory)
        self._calls = 0
        self.move_margin = checkpoint.move_margin   # metadata inference.move_margin (0: plain greedy)
        from envs.config import EnvConfig

        try:
            self.env_config = EnvConfig.from_saved(self.metadata["env_config"])
        except Exception as exc:
            raise CheckpointError(f"{self._source}/metadata.json: env_config is not valid for this arrow-rl: {exc}") from None

    @classmethod
    def load(cls, directory: str | Path, name: str | None = None) -> "CheckpointController":
        meta = read_metadata(directory)  # fail on plain-JSON problems before unpickling anything
        if "env_config" not in meta:
            raise CheckpointMismatchError(f"{directory} was not trained on PDClusterEnv (env_id {meta.get('env_id')!r})")
        return cls(load_checkpoint(directory), name=name)

    @property
    def initial_prefill(self) -> int | None:
        """The split the policy was trained to start from (None: half the cluster)."""
        return self.env_config.initial_prefill

    def reset(self, info: ClusterInfo) -> None:
        from envs.actions import ActionCodec
        from envs.observation import ObservationBuilder
        from envs.pool_observation import PoolObservationBuilder, reference_profile

        check_cluster(self.metadata, info, self._source)
        cfg = self.env_config
        slo = SLO(info.slo.ttft_s, info.slo.tpot_s)
        if cfg.action.three_roles:   # size-free: built for this cluster, nothing padded
            from envs.split_codec import three_role_codec

            builder = PoolObservationBuilder(slo, info.num_instances, cfg.observation, cfg.action.min_pool_size)
            codec = three_role_codec(cfg.action, info.num_instances)
        else:
            obs_cfg = cfg.observation.model_copy(update={"max_instances": int(self.metadata["max_instances"])})
            act_cfg = cfg.action.model_copy(update={"max_instances": int(self.metadata["max_instances"])}) \
                if cfg.action.kind == "target" else cfg.action
            builder = ObservationBuilder(slo, info.num_instances, obs_cfg, cfg.action.min_pool_size)
            codec = ActionCodec(act_cfg, info.num_instances)
        problems = []
        obs_size = int(np.prod(builder.observation_space.shape)) if builder.observation_space.shape else -1
        if obs_size != self.checkpoint.obs_size:
            problems.append(f"observation size {self.checkpoint.obs_size} (checkpoint) vs {obs_size} (this cluster)")
        if int(codec.space.n) != self.checkpoint.n_actions:
            problems.append(f"action space Discrete({self.checkpoint.n_actions}) (checkpoint) vs "
                            f"Discrete({int(codec.space.n)}) (this cluster)")
        if problems:
            raise CheckpointMismatchError(f"{self._source} does not fit this cluster: " + "; ".join(problems))
        from arrow_rl.arrow import default_profiles

        profiles = default_profiles(info)  # the same Alg. 3 profiles PDClusterEnv uses
        if isinstance(builder, PoolObservationBuilder):
            profile = reference_profile(profiles)
            if profile is None and cfg.observation.load_features == "capacity":
                raise CheckpointMismatchError(
                    f"{self._source} reads load in units of the instances' profiled capacity "
                    f"(observation.load_features 'capacity') but cluster {info.preset!r} has no profile: "
                    "measure one with `arrow-rl live-profile` and start the router with it")
            builder.set_profile(profile)
        self._builder, self._codec = builder, codec
        self._calls = 0
        self._profiles = profiles

    def observe(self, state: ControlState) -> tuple[np.ndarray, np.ndarray]:
        """The observation and action mask for ``state`` (advances the observation history)."""
        if self._builder is None or self._codec is None:
            raise RuntimeError(f"{self.name}: reset(cluster_info) must be called before act()")
        obs = self._builder.build(state)
        return np.asarray(obs, np.float32), self._codec.masks_for(state.instances)

    def act(self, state: ControlState) -> list[Flip]:
        obs, mask = self.observe(state)   # every call: the observation history advances each step
        decides = self._calls % self.env_config.action.decision_every == 0
        self._calls += 1
        if not decides:   # action.decision_every: the env masked all but the no-op on these steps
            return []
        hold = self._codec.hold_for(state.instances)   # what keeps the current split in this encoding
        action = hold_unless_confident(self.checkpoint.scores(obs), mask, hold, self.move_margin)
        flips = self._codec.flips(action, state.instances, self._profiles)
        return list(flips) if flips else []
