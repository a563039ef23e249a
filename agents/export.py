"""Bring your own agent: turn an SB3 model trained on a registered PDCluster env into a checkpoint.

A researcher who trains with their own script on ``gymnasium.make("arrow_rl/PDCluster-v0")`` has
a model but no checkpoint: ``arrow-rl evaluate``, ``suite run`` and ``deploy`` need the
``metadata.json`` that says which env config the policy saw (the observation and action encodings
are rebuilt from it at deploy time). One call writes it::

    import gymnasium as gym
    from stable_baselines3 import PPO
    import envs                                   # registers arrow_rl/PDCluster-v0
    from agents.export import export_model

    env = gym.make("arrow_rl/PDCluster-v0")
    model = PPO("MlpPolicy", env).learn(20_000)
    export_model(model, "checkpoints/my_ppo", env=env)

or, from a saved ``model.zip``: ``arrow-rl checkpoint export my_ppo.zip --out checkpoints/my_ppo``.

The model must read the env's own observation vector (or the same through ``VecNormalize``,
whose statistics are then stored too); observation wrappers that change it (frame stacking,
flattening a Dict) are not rebuilt at deploy time, so the export refuses a model whose spaces do not
match the env config's.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any, Mapping

from agents.checkpoint import (CheckpointError, CheckpointMismatchError, _algo_name, _load_normalizer,
                               check_spaces, save_checkpoint, space_spec)
from agents.config import ALGOS, DEFAULT_ENV_ID, algo_class

EnvSource = Any   # a gymnasium Env (wrapped or not), an SB3 VecEnv (VecNormalize included), or None


def training_distribution_of(cfg) -> dict[str, Any]:
    """What a checkpoint trained on ``cfg`` (an ``EnvConfig``) saw: presets, cluster sizes, SLO tiers,
    roles, workloads. ``agents.checkpoint.distribution_warnings`` compares a target cluster with it."""
    roles = ["prefill", "decode", "mixed"] if cfg.action.three_roles else ["prefill", "decode"]
    dist = cfg.distribution
    if dist is not None:
        lo, hi = dist.num_instances
        return {"preset": dist.presets[0] if len(dist.presets) == 1 else None, "presets": list(dist.presets),
                "cluster_sizes": list(range(lo, hi + 1)), "num_instances_range": [lo, hi],
                "slo_tiers": {k: t.model_dump() for k, t in dist.slo_tiers.items()}, "roles": roles,
                "traces": list(dist.traces) if dist.trace_probability > 0 else [],
                "trace_rate_scale_per_8": list(dist.trace_rate_scale),
                "generator": dist.generator.model_dump(mode="json") if dist.trace_probability < 1 else None,
                "mixed_start_probability": dist.mixed_start_probability}
    return {"preset": cfg.preset, "presets": [cfg.preset], "cluster_sizes": list(cfg.cluster_sizes),
            "slo_ttft_s": cfg.slo_ttft_s, "slo_tpot_s": cfg.slo_tpot_s, "roles": roles,
            "traces": list(cfg.episode.traces) if cfg.episode.generator is None else None,
            "generator": cfg.episode.generator, "rate_scale": list(cfg.episode.rate_scale)}


def env_metadata(cfg) -> dict[str, Any]:
    """The metadata a deployed controller rebuilds its observation and action mapping from, for a
    policy trained on ``cfg`` (an ``EnvConfig``): the config itself, the padding size, the feature
    names, the action encoding and the training distribution. Shared by ``train`` and ``export_model``
    so an exported model and a trained one are read the same way."""
    from envs.pd_cluster_env import make_encoders

    builder, codec = make_encoders(cfg, cfg.num_instances)
    if cfg.observation.kind != "pools":   # the padded encodings: the size they were built for
        from arrow_rl.cluster.base import SLO
        from envs.actions import ActionCodec
        from envs.observation import ObservationBuilder

        builder = ObservationBuilder(SLO(cfg.slo_ttft_s, cfg.slo_tpot_s), cfg.num_instances, cfg.observation,
                                     cfg.action.min_pool_size)
        codec = ActionCodec(cfg.action, cfg.num_instances)
    meta: dict[str, Any] = {
        "env_config": cfg.model_dump(mode="json"),
        "preset": cfg.preset,
        "num_instances": cfg.num_instances,
        "max_instances": builder.max_instances,
        "slo": {"ttft_s": cfg.slo_ttft_s, "tpot_s": cfg.slo_tpot_s},
        "observation_features": builder.feature_names,
        "action_encoding": {"kind": cfg.action.kind, "n": int(codec.space.n),
                            "max_flips_per_step": cfg.action.max_flips_per_step,
                            "min_pool_size": cfg.action.min_pool_size},
        "control_interval_s": cfg.control_interval_s,
        # what evaluate/deploy compare a target cluster with (agents.checkpoint.distribution_warnings)
        "training_distribution": training_distribution_of(cfg),
    }
    if cfg.action.kind == "moves":
        meta["action_encoding"]["move_fractions"] = list(cfg.action.move_fractions)
    if cfg.action.kind == "splits":
        meta["action_encoding"]["split_grid"] = cfg.action.split_grid
    return meta


def env_spaces(cfg) -> tuple[Any, Any]:
    """The observation and action spaces ``PDClusterEnv(cfg)`` has (sized for its largest cluster)."""
    from envs.pd_cluster_env import make_encoders

    sizes = cfg.cluster_sizes
    builder, codec = make_encoders(cfg, sizes[0] if len(sizes) == 1 else cfg.max_cluster_size)
    return builder.observation_space, codec.space


def resolve_env_config(env: EnvSource = None, env_config: Any = None, env_id: str = DEFAULT_ENV_ID):
    """The ``EnvConfig`` a model was trained on, from whichever the caller has:

    - ``env``: the env the model learned on (``gymnasium.make(...)``, wrapped or not, or an SB3
      VecEnv of them): its own config is read, nothing is guessed;
    - ``env_config``: the keyword arguments given to ``gymnasium.make(env_id, ...)`` (a mapping,
      merged over the registered variant as ``make`` does), an ``EnvConfig``, or a YAML file: a
      training config (its ``env:`` block, merged over the variant its ``id`` names) or an env
      config (``configs/env/*.yaml``, as ``gymnasium.make(env_id, config=path)`` reads it);
    - neither: the registered variant ``env_id`` with no overrides.
    """
    from agents.envs_bridge import env_config as variant_config
    from envs.config import EnvConfig

    if env is not None and env_config is not None:
        raise ValueError("give env or env_config, not both (the env already knows its config)")
    if env is not None:
        cfg = _config_of_env(env)
        if cfg is None:
            raise CheckpointError(f"{type(env).__name__} is not a PDClusterEnv (nor wraps one): no env config to "
                                  "export; pass env_config= with the gymnasium.make keyword arguments instead")
        return cfg
    if env_config is None:
        return variant_config(env_id, {})
    if isinstance(env_config, EnvConfig):
        return env_config
    if isinstance(env_config, Mapping):
        return variant_config(env_id, dict(env_config))
    if isinstance(env_config, (str, Path)):
        from arrow_rl.config_io import read_config_mapping
        from envs.pd_cluster_env import resolve_config

        path = Path(env_config)
        data = read_config_mapping(path, "env config")
        if isinstance(data.get("env"), dict):   # a training config: its env block over the variant it names
            block = dict(data["env"])
            block_id = block.pop("id", env_id)
            try:
                return variant_config(block_id, block)
            except ValueError as exc:
                from envs.config import EnvConfigError

                raise ValueError(exc.located(str(path), "env.") if isinstance(exc, EnvConfigError)
                                 else f"{path}: {exc}") from None
        return resolve_config(path, {})
    raise TypeError(f"env_config must be a mapping, an EnvConfig or a YAML path, got {type(env_config).__name__}")


def _config_of_env(env: EnvSource):
    """The ``EnvConfig`` of a PDClusterEnv, through gymnasium wrappers or an SB3 VecEnv."""
    from envs.pd_cluster_env import PDClusterEnv

    if hasattr(env, "env_method") and hasattr(env, "num_envs"):   # an SB3 VecEnv (VecNormalize included)
        try:
            unwrapped = env.get_attr("unwrapped", [0])[0]
        except Exception:  # noqa: BLE001 - a VecEnv whose workers cannot hand the env back
            return None
    else:
        unwrapped = getattr(env, "unwrapped", env)
    return unwrapped.config if isinstance(unwrapped, PDClusterEnv) else None


class _StatsFile:
    """A saved ``vecnormalize.pkl`` to copy into the checkpoint as it is (``save_checkpoint`` calls
    ``.save(path)`` on whatever it is given)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, dest: str) -> None:
        shutil.copyfile(self.path, dest)


def export_model(model, directory: str | Path, *, env: EnvSource = None, env_config: Any = None,
                 env_id: str = DEFAULT_ENV_ID, vecnormalize: Any = None, name: str | None = None,
                 overwrite: bool = False, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (an SB3 PPO, sb3-contrib MaskablePPO or DQN trained on a registered
    PDCluster env) as a checkpoint directory that ``arrow-rl evaluate``, ``suite run`` and
    ``deploy`` accept, and return it.

    The env config comes from ``env``/``env_config``/``env_id`` (``resolve_env_config``). Observation
    normalization: ``vecnormalize`` (a ``VecNormalize`` or the path of its saved statistics), else
    ``env`` itself when it is a ``VecNormalize``. Refused with a message naming the mismatch: an
    algorithm other than the three, a model whose spaces are not the env config's, an existing
    ``directory`` (unless ``overwrite``). The written checkpoint is loaded back once before returning.
    """
    from stable_baselines3.common.vec_env import VecNormalize

    directory = Path(directory)
    algo = _algo_name(model)
    if algo not in ALGOS:
        raise CheckpointError(f"cannot export a {type(model).__name__} model: checkpoints hold "
                              f"{', '.join(ALGOS)} (the algorithms the controller loads)")
    cfg = resolve_env_config(env, env_config, env_id)
    obs_space, act_space = env_spaces(cfg)
    have = {"observation_space": space_spec(model.observation_space), "action_space": space_spec(model.action_space)}
    try:
        check_spaces(have, obs_space, act_space, source="the model")
    except CheckpointMismatchError as exc:
        detail = str(exc).split(": ", 1)[1].replace("(checkpoint)", "(model)").replace("(environment)", "(env config)")
        raise CheckpointMismatchError(f"the model does not fit the env config it is exported with ({detail}); "
                                      "export it with the config (or env) it was trained on") from None
    if vecnormalize is None and isinstance(env, VecNormalize):
        vecnormalize = env
    if isinstance(vecnormalize, (str, Path)):
        stats = Path(vecnormalize)
        if not stats.is_file():
            raise CheckpointError(f"{stats}: VecNormalize statistics not found")
        _load_normalizer(stats, model.observation_space)   # a damaged or mismatched file names itself
        vecnormalize = _StatsFile(stats)
    if directory.exists() and any(directory.iterdir()):
        if not overwrite:
            raise CheckpointError(f"{directory}: already exists and is not empty (pass overwrite=True / --force)")
        shutil.rmtree(directory)
    meta = {"name": name or directory.name, "algo": algo, "env_id": env_id, **env_metadata(cfg),
            "training": {"stage": "exported", **(extra or {})}}
    save_checkpoint(directory, model, meta, vecnormalize=vecnormalize)
    from agents.controller import CheckpointController

    CheckpointController.load(directory)   # the reader deploy uses accepts what was written
    return directory


def infer_algo(model_zip: str | Path) -> str:
    """The algorithm of an SB3 ``model.zip``, read from its JSON ``data`` entry (no unpickling):
    MaskablePPO and DQN policies live in their own modules; any other actor-critic policy is PPO's."""
    path = Path(model_zip)
    try:
        with zipfile.ZipFile(path) as zf:
            data = json.loads(zf.read("data"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: model file not found") from None
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not an SB3 model zip ({type(exc).__name__}: {exc})") from None
    module = str((data.get("policy_class") or {}).get("__module__", ""))
    if "maskable" in module:
        return "maskable_ppo"
    if "dqn" in module:
        return "dqn"
    return "ppo"


def load_sb3_model(model_zip: str | Path, algo: str | None = None):
    """Load a saved SB3 model for export. SECURITY: unpickles the zip; export only models you trust."""
    path = Path(model_zip)
    algo = algo or infer_algo(path)
    cls = algo_class(algo)
    try:
        return cls.load(path, device="cpu")
    except Exception as exc:  # noqa: BLE001 - SB3 raises many kinds of errors for damaged zips
        raise CheckpointError(f"{path}: cannot load it as a {algo} model ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:200]})") from None


__all__ = ["env_metadata", "env_spaces", "export_model", "infer_algo", "load_sb3_model", "resolve_env_config",
           "training_distribution_of"]
