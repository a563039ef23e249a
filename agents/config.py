"""The training configuration: one YAML file (rl-zoo3 style) describes a reproducible run.

A run is fully determined by its config and its seed, so the config is validated at the boundary
(pydantic, errors name the file and the field) and stored verbatim in every checkpoint's metadata.

Layout (see ``docs/agents.md`` for every field)::

    name: maskable_ppo_azure
    algo: maskable_ppo            # ppo | maskable_ppo | dqn
    policy: MlpPolicy
    policy_kwargs: {net_arch: [64, 64], activation_fn: tanh}
    n_envs: 4
    n_timesteps: 200000
    normalize: false              # or true, or {norm_obs: true, norm_reward: false, clip_obs: 10}
    seed: 0
    vec_env: dummy                # dummy | subproc | ray (env workers as Ray actors, docs/scaling.md)
    ray: {envs_per_worker: 4}     # with vec_env: ray (address, cpus_per_worker)
    learning_rate: lin_3e-4       # any other key is an algorithm hyperparameter
    n_steps: 256
    env: {...}                    # EnvConfig fields (+ optional ``id``)
    pretrain: {...}               # behaviour cloning from Arrow + DAgger
    eval: {...}                   # held-out evaluation during training
"""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path
from typing import Any, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from arrow_rl.config_io import ConfigFileError, read_config_mapping

ALGOS = ("ppo", "maskable_ppo", "dqn")
DEFAULT_ENV_ID = "arrow_rl/PDCluster-v0"

# Names of torch activation functions accepted in ``policy_kwargs.activation_fn`` (YAML cannot
# hold a class, rl-zoo3 uses the same short names).
ACTIVATIONS = ("tanh", "relu", "elu", "leaky_relu", "gelu", "silu")

# Hyperparameters that take a schedule string (``lin_3e-4``) in addition to a number.
SCHEDULED = ("learning_rate", "clip_range", "clip_range_vf")

# Policies that fit PDClusterEnv: a flat Box observation (MlpPolicy) or, with
# ``observation.per_instance``, a Dict observation (MultiInputPolicy). CnnPolicy needs images.
POLICIES = ("MlpPolicy", "MultiInputPolicy")

# ``policy_kwargs`` keys a YAML file can express (the rest of SB3's policy arguments take Python
# classes, or apply to continuous actions only); each is also checked against the policy class.
POLICY_KWARGS = ("net_arch", "activation_fn", "ortho_init", "share_features_extractor", "normalize_images",
                 "optimizer_kwargs")

# torch device strings SB3 accepts ("auto" picks CUDA when available).
_DEVICE_RE = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"

# Range of every numeric hyperparameter (SB3's constructors assert some of these deep inside model
# construction, and accept others that make training meaningless, e.g. gamma=2):
# name -> (integer?, low, low inclusive?, high, high inclusive?). None: unbounded on that side.
HYPERPARAM_RANGES: dict[str, tuple[bool, float | None, bool, float | None, bool]] = {
    "n_steps": (True, 1, True, None, False),
    "batch_size": (True, 1, True, None, False),
    "n_epochs": (True, 1, True, None, False),
    "buffer_size": (True, 1, True, None, False),
    "learning_starts": (True, 0, True, None, False),
    "gradient_steps": (True, -1, True, None, False),   # SB3: -1 = as many as env steps
    "target_update_interval": (True, 1, True, None, False),
    "stats_window_size": (True, 1, True, None, False),
    "train_freq": (True, 1, True, None, False),
    "gamma": (False, 0, False, 1, True),
    "gae_lambda": (False, 0, True, 1, True),
    "ent_coef": (False, 0, True, None, False),
    "vf_coef": (False, 0, True, None, False),
    "max_grad_norm": (False, 0, False, None, False),
    "target_kl": (False, 0, False, None, False),
    "tau": (False, 0, False, 1, True),
    "exploration_fraction": (False, 0, True, 1, True),
    "exploration_initial_eps": (False, 0, True, 1, True),
    "exploration_final_eps": (False, 0, True, 1, True),
}


class ConfigError(ValueError):
    """A training config is invalid; the message names the file and the field."""


def parse_schedule(value: Union[float, str], field: str) -> Union[float, Callable[[float], float]]:
    """rl-zoo3 schedule syntax: a number is constant, ``lin_X`` decays linearly from X to 0 over
    training (SB3 passes ``progress_remaining`` going 1 -> 0), ``const_X`` is constant X."""
    if isinstance(value, bool):
        raise ConfigError(f"{field}: expected a number or 'lin_<x>'/'const_<x>', got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        kind, _, number = value.partition("_")
        try:
            x = float(number)
        except ValueError:
            raise ConfigError(f"{field}: cannot parse schedule {value!r} (expected 'lin_<x>' or 'const_<x>')") from None
        if kind == "lin":
            return _LinearSchedule(x)
        if kind == "const":
            return x
    raise ConfigError(f"{field}: unknown schedule {value!r} (expected a number, 'lin_<x>' or 'const_<x>')")


class _LinearSchedule:
    """Picklable linear schedule (SB3 saves schedules inside model.zip)."""

    def __init__(self, initial: float) -> None:
        self.initial = initial

    def __call__(self, progress_remaining: float) -> float:
        return progress_remaining * self.initial

    def __repr__(self) -> str:
        return f"lin_{self.initial:g}"


class NormalizeConfig(BaseModel):
    """``VecNormalize`` options. Statistics are frozen at the end of training and saved beside the
    model (``vecnormalize.pkl``) so the deployed controller scales observations identically."""

    model_config = ConfigDict(extra="forbid")
    norm_obs: bool = True
    norm_reward: bool = False
    clip_obs: float = Field(10.0, gt=0)
    clip_reward: float = Field(10.0, gt=0)
    gamma: float = Field(0.99, gt=0, le=1)


class RayConfig(BaseModel):
    """``vec_env: ray``: env workers as Ray actors (``agents.ray_vec_env``, docs/scaling.md)."""

    model_config = ConfigDict(extra="forbid")
    envs_per_worker: int = Field(
        4, ge=1, description="envs one actor holds and steps as a batch (one message per worker per step: "
        "a ~1 ms emulator step is about what one actor call costs)")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each actor reserves on the Ray cluster")
    address: str | None = Field(None, description="Ray cluster: auto, HOST:PORT, or null for a private local Ray")
    start_timeout_s: float = Field(120.0, gt=0, description="error out when the cluster cannot start every worker "
                                   "within this time (too few free CPUs) instead of waiting forever")


class EnvBlock(BaseModel):
    """The environment: a registered gymnasium id plus the fields of its ``EnvConfig``.

    Every key other than ``id`` is passed through to the env's config class, which validates it
    (so a typo is reported by the env with the field's name)."""

    model_config = ConfigDict(extra="allow")
    id: str = DEFAULT_ENV_ID

    def env_kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class PretrainConfig(BaseModel):
    """Arrow as teacher: behaviour cloning, DAgger rounds, then RL fine-tuning from the clone."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    teacher_steps: int = Field(20_000, ge=1, description="transitions collected with the teacher acting")
    epochs: int = Field(10, ge=1, description="passes over the (aggregated) dataset per fit")
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    dagger_rounds: int = Field(3, ge=0)
    dagger_steps: int = Field(10_000, ge=1, description="transitions added per DAgger round")
    dagger_beta: float = Field(
        0.5, ge=0, le=1, description="probability the teacher acts in round 1 of DAgger; decays by dagger_beta each round"
    )
    class_balance: float = Field(
        0.5, ge=0, le=1, description="0: plain cross-entropy; 1: inverse-frequency class weights (the teacher is mostly no-op)"
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="probability mass spread over the valid non-teacher actions in the cloning target"
    )
    soft_label_weight: float = Field(
        0.0, ge=0, le=1, description="share of the cloning target taken from the teacher's candidate scores "
        "(softmax of score / soft_label_temperature over the actions it tried) instead of its argmax; 0: hard labels. "
        "Only a teacher that scores its candidates (oracle-moves) gives them; other samples keep the hard label")
    soft_label_temperature: float = Field(
        0.02, gt=0, description="temperature of the soft labels as a share of the best candidate's score: a candidate "
        "that much worse (0.02: 2%) gets 1/e of the best one's weight. Relative, because oracle-moves' scores (requests "
        "within SLO over its lookahead) grow with the traffic: from tens to thousands across the training distribution")
    entropy_coef: float = Field(
        0.0, ge=0, description="entropy bonus in the cloning loss: keeps the clone stochastic so RL fine-tuning can explore"
    )
    value_pretrain: bool = Field(True, description="fit the value head to Monte-Carlo returns of the clone before RL")
    max_dataset: int = Field(500_000, ge=1, description="oldest samples are dropped beyond this")
    label_envs: int | None = Field(
        None, ge=1, description="envs imitation labels on (None: n_envs). With vec_env: subproc each is a process; "
        "more envs than cores balance the lock-step, since a 32-instance episode plans far longer than a 4-instance one")
    rl_after: bool = Field(True, description="fine-tune with RL after cloning (n_timesteps steps)")
    teacher_during_rl: bool = Field(
        True, description="keep running the env's teacher during RL fine-tuning (info['teacher_action']); "
        "false saves its cost when it is expensive (a lookahead teacher clones the cluster per candidate)")


class EvalConfig(BaseModel):
    """Evaluation on held-out trace windows during training (and the keep-best rule)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    env: dict[str, Any] = Field(default_factory=dict, description="overrides of the training env block (e.g. held-out traces)")
    freq: int = Field(10_000, ge=1, description="evaluate every this many environment steps (summed over envs)")
    n_episodes: int = Field(2, ge=1, description="episodes per rate scale")
    rate_scales: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    seed: int = Field(10_000, description="eval episodes use seeds seed, seed+1, ...; fixed so evaluations compare")
    compare_teacher: bool = Field(True, description="also run the teacher (Arrow) on the same episodes")
    keep: Literal["best", "final"] = Field(
        "best", description="the checkpoint `train --out` exports: the best-scoring evaluation one, or the last one "
        "(when the evaluation episodes are too narrow to choose by, e.g. one trace for a multi-workload policy)")

    @field_validator("rate_scales")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(x <= 0 for x in v):
            raise ValueError(f"rate scales must be positive, got {v}")
        return sorted(v)


class HoldoutConfig(BaseModel):
    """Hold out a disjoint time range of every training trace for evaluation.

    With ``fraction`` f > 0 each trace of ``env.episode.traces`` is cut at the time where its last
    f of the span begins: episodes for training are drawn only before the cut, held-out evaluation
    episodes only after it (unless ``eval.env`` names its own traces). The two parts are written as
    canonical CSVs into the run directory and the cut times go into the checkpoint metadata, so
    ``arrow-rl evaluate --workload <trace> --start <cut>`` evaluates on the held-out range."""

    model_config = ConfigDict(extra="forbid")
    fraction: float = Field(0.0, ge=0, lt=1, description="share of each trace's span held out (0: none)")
    eval_on: Literal["heldout", "train"] = Field(
        "heldout",
        description="where the evaluations during training (and the keep-best choice) draw episodes: the held-out "
        "range, or fixed-seed episodes of the training range (then the held-out range is never seen "
        "until the final test with arrow-rl evaluate)",
    )


class TrainConfig(BaseModel):
    """One training run. Unknown top-level keys are algorithm hyperparameters (rl-zoo3 style) and
    are checked against the algorithm's constructor."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    algo: Literal["ppo", "maskable_ppo", "dqn"]
    policy: str = "MlpPolicy"
    policy_kwargs: dict[str, Any] = Field(default_factory=dict)
    n_envs: int = Field(1, ge=1)
    n_timesteps: int = Field(100_000, ge=0)
    normalize: Union[bool, NormalizeConfig] = False
    seed: int = 0
    vec_env: Literal["dummy", "subproc", "ray"] = "dummy"
    ray: RayConfig = Field(default_factory=RayConfig)
    device: str = "cpu"
    log_dir: str = "runs"
    tensorboard: bool = True
    env: EnvBlock = Field(default_factory=EnvBlock)
    pretrain: PretrainConfig = Field(default_factory=lambda: PretrainConfig(enabled=False))
    eval: EvalConfig = Field(default_factory=EvalConfig)
    holdout: HoldoutConfig = Field(default_factory=HoldoutConfig)
    init_from: str | None = Field(
        None, description="start from this checkpoint directory's network weights (and optimizer state) instead "
        "of fresh ones: fine-tuning a trained policy further, by RL (pretrain.enabled: false) or by more DAgger "
        "rounds whose student starts as that policy (pretrain.enabled: true). Its algorithm, observation and action "
        "spaces must be this config's. Relative paths resolve from the working directory")
    checkpoint_every: int | None = Field(
        None, ge=1, description="also save the policy every this many RL steps as checkpoints/step_<N>/ (None: only "
        "clone, best and final), so a run's snapshots can be compared afterwards on several scenarios "
        "(`arrow-rl suite run --controllers runs/<run>/checkpoints/step_*`)")
    tune: dict[str, Any] | None = Field(
        None, description="search space for `arrow-rl tune` (validated by agents.tune); `arrow-rl train` ignores it")

    @field_validator("normalize", mode="before")
    @classmethod
    def _normalize(cls, v: Any) -> Any:
        if v is True:
            return NormalizeConfig()
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.match(_DEVICE_RE, v):
            raise ValueError(f"{v!r} is not a torch device; expected auto, cpu, mps, cuda or cuda:<index>")
        return v

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if v not in POLICIES:
            raise ValueError(f"policy {v!r} does not fit PDClusterEnv; expected one of {POLICIES} "
                             "(MultiInputPolicy with observation.per_instance)")
        return v

    @field_validator("policy_kwargs")
    @classmethod
    def _policy_kwargs(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(v) - set(POLICY_KWARGS))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; valid: {sorted(POLICY_KWARGS)}")
        act = v.get("activation_fn")
        if act is not None and act not in ACTIVATIONS:
            raise ValueError(f"activation_fn {act!r} is not one of {ACTIVATIONS}")
        if "net_arch" in v:
            _check_net_arch(v["net_arch"])
        for key in ("ortho_init", "share_features_extractor", "normalize_images"):
            if key in v and not isinstance(v[key], bool):
                raise ValueError(f"{key} must be true or false, got {v[key]!r}")
        if "optimizer_kwargs" in v and not isinstance(v["optimizer_kwargs"], dict):
            raise ValueError(f"optimizer_kwargs must be a mapping, got {v['optimizer_kwargs']!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.pretrain.enabled and self.algo == "dqn":
            raise ValueError("pretrain (behaviour cloning) is implemented for ppo and maskable_ppo, not dqn")
        unknown = set(self.hyperparams) - set(_algo_parameters(self.algo))
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {sorted(unknown)} for algo {self.algo!r}; "
                f"valid: {sorted(_algo_parameters(self.algo))}"
            )
        for key in SCHEDULED:
            if self.hyperparams.get(key) is not None:  # clip_range_vf: None = no value clipping
                _check_schedule(key, parse_schedule(self.hyperparams[key], key))
        for key, value in self.hyperparams.items():
            if key in HYPERPARAM_RANGES:
                _check_range(key, value, *HYPERPARAM_RANGES[key])
        if "net_arch" in self.policy_kwargs and self.algo == "dqn" and isinstance(self.policy_kwargs["net_arch"], dict):
            raise ValueError("policy_kwargs.net_arch: dqn takes a list of layer sizes, not a pi/vf mapping")
        if self.algo in ("ppo", "maskable_ppo"):
            n_steps = self.hyperparams.get("n_steps", 2048)
            if n_steps * self.n_envs < 2:  # SB3 PPO asserts this when the model is built
                raise ValueError(f"n_steps * n_envs must be > 1 (got {n_steps} * {self.n_envs}); "
                                 "PPO needs at least two samples per rollout")
        return self

    @property
    def hyperparams(self) -> dict[str, Any]:
        """Algorithm constructor keyword arguments given at the top level of the YAML."""
        return dict(self.model_extra or {})

    @property
    def normalize_config(self) -> NormalizeConfig | None:
        return self.normalize if isinstance(self.normalize, NormalizeConfig) else None

    def eval_env_block(self) -> EnvBlock:
        """The training env block with the eval overrides applied."""
        merged = self.env.model_dump()
        merged.update(self.eval.env)
        return EnvBlock(**merged)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# Keys of the algorithm constructor that the config sets itself (not hyperparameters).
_RESERVED = {"policy", "env", "policy_kwargs", "seed", "device", "tensorboard_log", "verbose", "_init_setup_model"}


def _check_net_arch(arch: Any) -> None:
    """SB3's ``net_arch``: a list of hidden-layer sizes, or ``{pi: [...], vf: [...]}`` (actor-critic)."""
    def sizes(x: Any, where: str) -> None:
        if not isinstance(x, list) or not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 65536
                                               for n in x):
            raise ValueError(f"{where} must be a list of layer sizes (integers 1..65536), got {x!r}")

    if isinstance(arch, dict):
        extra = sorted(set(arch) - {"pi", "vf", "qf"})
        if extra:
            raise ValueError(f"net_arch mapping has unknown key(s) {extra}; expected pi and vf")
        for key, value in arch.items():
            sizes(value, f"net_arch.{key}")
    else:
        sizes(arch, "net_arch")


def _check_range(key: str, value: Any, integer: bool, lo: float | None, lo_inc: bool,
                 hi: float | None, hi_inc: bool) -> None:
    """Raise a message naming ``key`` when ``value`` is not a number in its range."""
    if value is None and key == "target_kl":
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ValueError(f"{key} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{key} must be finite, got {value!r}")
    if lo is not None and (value < lo or (value == lo and not lo_inc)):
        raise ValueError(f"{key} must be {'>=' if lo_inc else '>'} {lo:g}, got {value!r}")
    if hi is not None and (value > hi or (value == hi and not hi_inc)):
        raise ValueError(f"{key} must be {'<=' if hi_inc else '<'} {hi:g}, got {value!r}")


def _check_schedule(key: str, schedule: Union[float, Callable[[float], float]]) -> None:
    start = schedule.initial if isinstance(schedule, _LinearSchedule) else schedule
    if not (isinstance(start, float) and math.isfinite(start) and start > 0):
        raise ValueError(f"{key} must start at a finite positive value, got {start!r}")


def algo_class(algo: str) -> type:
    """The SB3 class of an algorithm name."""
    if algo == "ppo":
        from stable_baselines3 import PPO

        return PPO
    if algo == "maskable_ppo":
        from sb3_contrib import MaskablePPO

        return MaskablePPO
    if algo == "dqn":
        from stable_baselines3 import DQN

        return DQN
    raise ConfigError(f"unknown algo {algo!r}; expected one of {ALGOS}")


def _algo_parameters(algo: str) -> list[str]:
    params = inspect.signature(algo_class(algo).__init__).parameters
    return [p for p in params if p not in _RESERVED and p != "self"]


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read and validate a YAML training config; errors name the file and the offending field."""
    try:
        raw = read_config_mapping(path, "training config")
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from None
    if overrides:
        raw.update({k: v for k, v in overrides.items() if v is not None})
    config = config_from_dict(raw, source=str(path))
    check_env_blocks(config, source=str(path))
    return config


def check_env_blocks(config: "TrainConfig", source: str) -> None:
    """Validate the ``env:`` block (and the evaluation's, with its overrides) as the env will, so a
    bad field (an unknown preset, a typo) is one line naming the file and ``env.<field>``, reported
    before a run directory, a worker or a model exists."""
    from agents.envs_bridge import env_config
    from envs.config import EnvConfigError

    blocks = [("env", config.env)]
    if config.eval.enabled and config.eval.env:
        blocks.append(("eval.env", config.eval_env_block()))
    for where, block in blocks:
        try:
            env_config(block.id, block.env_kwargs())
        except EnvConfigError as exc:
            raise ConfigError(exc.located(source, f"{where}.")) from None
        except ValueError as exc:   # an unknown env id: the message already names env.id
            raise ConfigError(f"{source}: {exc}" if where == "env" else f"{source}: {where}: {exc}") from None


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> TrainConfig:
    """Validate a config mapping, turning pydantic errors into one readable message."""
    try:
        return TrainConfig(**raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{loc}: {msg}" if loc else msg)
        if len(lines) == 1:   # the usual case: one line naming the file and the field
            raise ConfigError(f"{source}: {lines[0]}") from None
        raise ConfigError(f"{source}: invalid training config\n" + "\n".join(f"  {line}" for line in lines)) from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def build_policy_kwargs(policy_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Turn YAML-friendly policy kwargs into SB3's (activation names -> torch classes)."""
    import torch.nn as nn

    out = dict(policy_kwargs)
    act = out.get("activation_fn")
    if isinstance(act, str):
        out["activation_fn"] = {
            "tanh": nn.Tanh,
            "relu": nn.ReLU,
            "elu": nn.ELU,
            "leaky_relu": nn.LeakyReLU,
            "gelu": nn.GELU,
            "silu": nn.SiLU,
        }[act]
    return out


def build_hyperparams(config: TrainConfig) -> dict[str, Any]:
    """Algorithm kwargs with schedule strings turned into callables."""
    out = config.hyperparams
    for key in SCHEDULED:
        if out.get(key) is not None:
            out[key] = parse_schedule(out[key], key)
    return out
