"""Configuration of ``PDClusterEnv``: one pydantic model, loadable from YAML, validated at the boundary.

Every choice the env makes that the Arrow paper does not dictate (history length, reward weights,
episode length, how many flips one action may make) is a field here with a documented default, so
that a trained checkpoint can record exactly which environment it was trained in.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from arrow_rl.config_io import format_validation_error, read_config_mapping
from arrow_rl.perf.presets import PRESET_NAMES

from envs.teacher_config import TEACHER_CONFIGS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class EpisodeConfig(_Strict):
    """How an episode's workload is drawn at ``reset`` and when the episode ends.

    Either a window of a trace (``traces``; random choice, random start, random rate factor) or a
    synthetic workload (``generator``; a spec for ``arrow_rl.workload.generators``), optionally after
    a warm-up (``warmup_s``) and at a load relative to the workload's knee (``knee_factor``). The
    horizon is the evaluator's (``run_policy``'s ``last_useful_time``: after it no unfinished request
    can still meet both SLOs), or ``drain_s`` after the arrival window if that comes first; ``end``
    says how the episode stops there (``PDClusterEnv``'s class docstring).
    """

    traces: list[str] = Field(default_factory=lambda: ["azure-conv"], min_length=1)
    trace_weights: list[float] | None = None
    generator: dict[str, Any] | None = None
    duration_s: float = Field(120.0, gt=0)
    random_start: bool = True
    start_s: float = Field(0.0, ge=0)
    rate_scale: tuple[float, float] = (1.0, 1.0)
    log_uniform_rate_scale: bool = False
    drain_s: float | None = Field(None, ge=0)   # None: no cap beyond the evaluator's horizon
    # Warm start (the suite's ``count_from_s``): the cluster first serves ``warmup_s`` seconds of the
    # episode's own load under ``warmup_controller`` (a policy spec; its controller flips), and the
    # agent's first step comes after that. Requests arriving in the warm-up are served but neither
    # rewarded nor counted in the attainment, so the empty start does not decide the episode.
    # 0 (default): start empty, as the shipped checkpoints were trained; the suite uses 120 s.
    warmup_s: float = Field(0.0, ge=0)
    warmup_controller: str = "arrow-interval"
    # How a trace's rate is raised by the episode's factor: "compress" divides timestamps (Arrow §6.1;
    # a 120 s episode at 16x replays 32 minutes of trace), "superpose" overlays that many copies of the
    # trace at its own time scale, the last thinned (the suite's protocol,
    # ``arrow_rl.evaluation.protocol``). Generators: "superpose" generates at the factor's rate.
    load_mode: Literal["compress", "superpose"] = "compress"
    # Load around each episode's knee: the factor is f x (quick serving-rate estimate of the workload
    # on this cluster, ``envs.serving_estimate``) / (the trace's or generator's mean rate), f uniform in
    # this range (e.g. [0.7, 1.3]). None: the factor is ``rate_scale``.
    knee_factor: tuple[float, float] | None = None
    # Episode end (class docstring of PDClusterEnv): "truncate" stops at the horizon with
    # truncated=True and charges only the in-flight requests that certainly miss their SLOs (the
    # suite's ``CertainMisses``); terminated=True once every request's outcome is decided.
    # "terminate": the horizon is terminal and every unfinished request is charged as a miss.
    end: Literal["truncate", "terminate"] = "truncate"
    # Cluster size drawn uniformly per episode from this list (None: EnvConfig.num_instances), so
    # one policy trains across sizes; the spaces are sized for the largest.
    num_instances: list[int] | None = Field(None, min_length=1)

    @field_validator("warmup_controller")
    @classmethod
    def _known_controller(cls, value: str) -> str:
        """A mistyped warm-up controller fails when the env is made, not at its first ``reset``
        (a checkpoint path is only checked to exist here; it loads at reset)."""
        from arrow_rl.controllers.registry import BUILTIN_SPECS, valid_specs_message

        s = value.strip()
        if s in BUILTIN_SPECS or s.startswith("static:") or (s and Path(s).exists()):
            return value
        raise ValueError(f"unknown controller {value!r}; {valid_specs_message()}")

    @model_validator(mode="after")
    def _check(self) -> "EpisodeConfig":
        lo, hi = self.rate_scale
        if not (0 < lo <= hi):
            raise ValueError(f"rate_scale must satisfy 0 < low <= high, got {self.rate_scale}")
        if self.knee_factor is not None and not 0 < self.knee_factor[0] <= self.knee_factor[1]:
            raise ValueError(f"knee_factor must satisfy 0 < low <= high, got {self.knee_factor}")
        if self.trace_weights is not None:
            if len(self.trace_weights) != len(self.traces):
                raise ValueError(
                    f"trace_weights has {len(self.trace_weights)} entries but traces has {len(self.traces)}")
            if any(w < 0 for w in self.trace_weights) or sum(self.trace_weights) <= 0:
                raise ValueError(f"trace_weights must be non-negative with a positive sum, got {self.trace_weights}")
        return self


class ActionConfig(_Strict):
    """The action encoding (see ``envs.actions``).

    ``discrete``: ``Discrete(1 + 2K)`` = no-op, move k instances prefill→decode, move k
    decode→prefill, k = 1..K (K = ``max_flips_per_step``). Independent of the cluster size.
    ``target``: ``Discrete(max_instances + 1)``, the number of prefill instances wanted;
    targets that would leave a pool below ``min_pool_size`` are masked.
    ``moves`` (three roles): ``Discrete(1 + 6·F)`` = no-op, then "move k instances from
    role X to role Y" for the 6 ordered pairs of PREFILL/DECODE/MIXED and k = ceil(f·N) for each f
    of ``move_fractions`` (``envs.moves``). Independent of the cluster size.
    ``splits`` (three roles): ``Discrete(1 + L)`` = hold, then "go to this P:D:M split", one action
    per valid split of a ``split_grid``-unit lattice of the pool (29 on the default 8-unit grid),
    reached at once (``envs.split_codec``). Independent of the cluster size.
    """

    kind: Literal["discrete", "target", "moves", "splits"] = "discrete"
    max_flips_per_step: int = Field(2, ge=1)
    min_pool_size: int = Field(1, ge=1)  # Arrow §5.5 / Alg. 3: never empty a pool (|S| ≤ 1 guard)
    max_instances: int | None = Field(None, ge=2)
    # moves: k = ceil(f * N) per fraction f (our choice: 1/16, 1/8, 1/4 give k = 1, 1, 1 at N = 4 and
    # 2, 4, 8 at N = 32, so a 32-instance cluster can cross a quarter of itself in one step)
    move_fractions: list[float] = Field(default_factory=lambda: [0.0625, 0.125, 0.25], min_length=1)
    # moves: two fractions with the same k on this cluster are one move (1/16 and 1/8 for N <= 8; all
    # three for N = 4). True: only the first such action stays valid, the others are masked, and every
    # label names that first one, so cloning does not tell an equivalent action apart as wrong.
    # False: all stay valid (how configs saved without this field were trained: ``SAVED_ENV_DEFAULTS``).
    distinct_moves: bool = True
    # The policy decides on every k-th control step only; in between, the no-op is the one valid
    # action (masked). Our choice, not the paper's: a lookahead teacher that re-plans every 5 s labels
    # the 4 steps between its plans "no-op" whatever the state, and a student trained on those
    # labels learns to never move. With k = the teacher's cadence every label is a plan,
    # and a deployed checkpoint keeps the cadence it was trained with (agents.controller).
    decision_every: int = Field(1, ge=1, le=60)
    # splits: the lattice of target splits, in units of N / split_grid (8: eighths of the pool, the
    # oracle-split teacher's default grid, so each of its targets on 8 instances is one action)
    split_grid: int = Field(8, ge=2, le=32)

    @property
    def three_roles(self) -> bool:
        """Whether the encoding knows MIXED (``moves`` and ``splits``; both need ``observation.kind: pools``)."""
        return self.kind in ("moves", "splits")

    @model_validator(mode="after")
    def _check_fractions(self) -> "ActionConfig":
        if self.decision_every > 1 and self.kind == "target":   # its no-op is state-dependent, not index 0
            raise ValueError("decision_every > 1 needs action.kind 'discrete', 'moves' or 'splits' (not 'target')")
        if any(not 0 < f <= 1 for f in self.move_fractions):
            raise ValueError(f"move_fractions must lie in (0, 1], got {self.move_fractions}")
        if len(set(self.move_fractions)) != len(self.move_fractions):
            raise ValueError(f"move_fractions has duplicates: {self.move_fractions}")
        return self


class ObservationConfig(_Strict):
    """The observation encoding (see ``envs.observation``; ``kind: pools`` is ``envs.pool_observation``:
    a fixed-length, size-free vector of per-role pool features relative to the SLOs)."""

    kind: Literal["cluster", "pools"] = "cluster"
    history: int = Field(4, ge=1)                      # frames in the stack (current included)
    history_mode: Literal["stack", "delta"] = "stack"
    per_instance: bool = False                         # Dict space with padded per-instance rows
    max_instances: int | None = Field(None, ge=2)      # padding size; default: the cluster size
    token_scale: float = Field(2048.0, gt=0)           # prompt tokens one instance computes per iteration
    flip_age_scale_s: float = Field(60.0, gt=0)        # time-since-flip saturates at 1 after this
    # append PREFIX_CACHE_FEATURE (the window's prefix-cache hit rate) to every frame; off by default
    # so that policies trained without it (the shipped checkpoints) keep their observation size
    prefix_cache: bool = False
    # how a pools observation reports offered load (``kind: pools`` only). "raw": arrivals, arriving
    # prompt tokens and finished requests per second per instance, as the shipped checkpoints saw them.
    # "capacity": the same load in units of the instance's profiled capacity (Arrow §5.2's T(r) and
    # MT(SLO_TPOT), capped by its KV cache): the share of an instance's time the arrivals' prefills
    # need, the share of its decode context their decodes need, and the prefill share of the two. A
    # model twice as fast at prefill reads half the prefill load, so a policy need not have seen the
    # model's raw rates (our choice; the paper has no learned observation). Needs the instance profile: emulated presets have one; a live router has
    # one when started with measured profiles (``arrow-rl live-profile``).
    load_features: Literal["raw", "capacity"] = "raw"
    # ``kind: pools`` only. Off by default so the shipped checkpoints keep their observation. On, it
    # appends once, after the frame history, what 4 one-second frames cannot show (envs/memory_features.py):
    # EWMAs at each of ``memory_time_constants_s`` of the arrival, prompt-token and output-token rates
    # and of the prompt and output lengths, the prompt-token backlog per prefill instance, the peak
    # decode KV use, and flip churn. A policy sees whether a burst is new or steady, and work that is
    # queued but not yet slow, before the windowed latencies move (our choice; Arrow has no learned input).
    memory: bool = False
    # the EWMAs' time constants (s); one set of rate and length features per entry
    memory_time_constants_s: tuple[float, ...] = Field((10.0, 60.0, 300.0), min_length=1, max_length=8)

    @field_validator("memory_time_constants_s")
    @classmethod
    def _distinct_time_constants(cls, taus: tuple[float, ...]) -> tuple[float, ...]:
        if any(not (t > 0 and math.isfinite(t)) for t in taus):
            raise ValueError(f"time constants must be positive and finite, got {list(taus)}")
        if len({f"{t:g}" for t in taus}) != len(taus):   # they name features (arrival_rate_ewma10s)
            raise ValueError(f"time constants must be distinct, got {list(taus)}")
        return taus


class SLOTier(_Strict):
    ttft_s: float = Field(gt=0)
    tpot_s: float = Field(gt=0)


class GeneratorRanges(_Strict):
    """Seeded synthetic workloads for ``DistributionConfig``: each draw picks a kind and samples every
    parameter from its range (log-uniform for rates and lengths, uniform otherwise)."""

    kinds: list[Literal["poisson", "gamma", "mmpp", "phase_shift"]] = Field(
        default_factory=lambda: ["poisson", "gamma", "mmpp", "phase_shift"], min_length=1)
    rate_per_instance: tuple[float, float] = (0.1, 1.0)        # requests / s / instance (mmpp: calm rate)
    input_mean: tuple[float, float] = (200.0, 6000.0)          # tokens (the P/D mix, with output_mean)
    input_cv: tuple[float, float] = (0.3, 1.5)
    output_mean: tuple[float, float] = (50.0, 1500.0)
    output_cv: tuple[float, float] = (0.3, 2.0)                # the output-length tail
    burst_cv: tuple[float, float] = (1.0, 4.0)                 # gamma interarrival CV
    burst_ratio: tuple[float, float] = (2.0, 8.0)              # mmpp burst rate / calm rate
    burst_dwell_s: tuple[float, float] = (10.0, 60.0)          # mmpp mean dwell in each state
    phase_s: tuple[float, float] = (20.0, 120.0)               # phase_shift period
    max_tokens: int = Field(16384, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "GeneratorRanges":
        for name in ("rate_per_instance", "input_mean", "input_cv", "output_mean", "output_cv", "burst_cv",
                     "burst_ratio", "burst_dwell_s", "phase_s"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must satisfy 0 < low <= high, got {(lo, hi)}")
        return self


class DistributionConfig(_Strict):
    """The generalist's training distribution (``envs.distribution``). When set, every
    ``reset`` draws a preset, an SLO tier, a cluster size, a workload (a window of a training trace or a
    seeded generator) and a starting P:D:M split; the fields of ``EnvConfig`` and ``episode`` it draws
    are overridden for that episode. Test scenarios of the suite must never appear here."""

    presets: list[str] = Field(default_factory=lambda: ["h100-llama3.1-70b-tp4"], min_length=1)
    # relative draw weights of ``presets`` (None: uniform); e.g. more episodes on the suite's train preset
    preset_weights: list[float] | None = None
    # scale drawn rates (generator rate_per_instance, trace_rate_scale) by the preset's capacity relative
    # to ``presets[0]`` (arrow_rl.perf.capacity), so every model sees loads around its own saturation
    rates_by_capacity: bool = False
    slo_tiers: dict[str, SLOTier] = Field(default_factory=lambda: {
        "loose": SLOTier(ttft_s=10.0, tpot_s=0.125), "interactive": SLOTier(ttft_s=3.0, tpot_s=0.05)}, min_length=1)
    num_instances: tuple[int, int] = (4, 32)                   # inclusive, drawn uniformly
    trace_probability: float = Field(0.5, ge=0, le=1)          # else a generator
    traces: list[str] = Field(default_factory=lambda: ["azure-code", "azure-conv", "mooncake"])
    # trace windows replay at rate_scale = x * N / 8, x log-uniform here: a trace's native rate per
    # 8 instances, so load per instance does not depend on the size drawn
    trace_rate_scale: tuple[float, float] = (2.0, 16.0)
    generator: GeneratorRanges = Field(default_factory=GeneratorRanges)
    # starting split: with this probability a MIXED pool of uniform size 1..N, else none; P then
    # uniform over the splits that keep P and D both >= 1 (or both 0 when MIXED takes everything)
    mixed_start_probability: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> "DistributionConfig":
        lo, hi = self.num_instances
        if not 2 <= lo <= hi:
            raise ValueError(f"num_instances must satisfy 2 <= low <= high, got {self.num_instances}")
        a, b = self.trace_rate_scale
        if not 0 < a <= b:
            raise ValueError(f"trace_rate_scale must satisfy 0 < low <= high, got {self.trace_rate_scale}")
        unknown = [p for p in self.presets if p not in PRESET_NAMES]
        if unknown:
            raise ValueError(f"presets: unknown preset {unknown[0]!r}; valid presets: {', '.join(PRESET_NAMES)}")
        if self.preset_weights is not None:
            if len(self.preset_weights) != len(self.presets):
                raise ValueError(f"preset_weights has {len(self.preset_weights)} entries for {len(self.presets)} presets")
            if any(not (w >= 0 and math.isfinite(w)) for w in self.preset_weights) or sum(self.preset_weights) <= 0:
                raise ValueError(f"preset_weights must be finite, >= 0 and not all 0, got {self.preset_weights}")
        if self.trace_probability > 0 and not self.traces:
            raise ValueError("trace_probability > 0 needs at least one trace")
        return self


class RewardConfig(_Strict):
    """Weights of the goodput-based reward (see ``envs.reward``)."""

    violation_penalty: float = Field(1.0, ge=0)
    pending_miss_penalty: float = Field(0.05, ge=0)
    flip_penalty: float = Field(0.0, ge=0)
    # Bound of the pending term per step, in steps' worth of offered requests (None: unbounded).
    pending_cap: float | None = Field(None, gt=0)
    # Terminal term at the episode's last step: target_weight x arrival-window steps x a smooth
    # step of the episode's attainment around target_attainment (width target_width). 0: off.
    target_weight: float = Field(0.0, ge=0)
    target_attainment: float = Field(0.9, gt=0, lt=1)
    target_width: float = Field(0.02, gt=0)


# Teachers that live on the env's side and plan in the moves codec on emulator clones (privileged);
# their settings are in envs/teacher_config.py, their classes in envs/teachers.py.
ENV_TEACHERS = tuple(TEACHER_CONFIGS)


class EnvConfig(_Strict):
    """Everything ``PDClusterEnv`` needs. Defaults give an 8-instance H100 Llama-3.1-8B cluster,
    4P4D start (Arrow §6.1's fleet), on 2-minute windows of the Azure conversation trace."""

    # cluster (passed to the backend; the emulator maps these onto EmulatorConfig)
    preset: str = "h100-llama3.1-8b-tp1"
    num_instances: int = Field(8, ge=2)
    initial_prefill: int | None = Field(None, ge=1)
    max_num_batched_tokens: int | None = Field(None, ge=1)   # None: vLLM's serve default on the preset's GPU
    max_num_seqs: int | None = Field(None, ge=1)
    slo_ttft_s: float = Field(2.0, gt=0)
    slo_tpot_s: float = Field(0.1, gt=0)
    flip_delay_s: float = Field(0.0, ge=0)
    emulator: dict[str, Any] = Field(default_factory=dict)   # extra EmulatorConfig fields

    # control loop
    control_interval_s: float = Field(1.0, gt=0)
    # Policy spec (arrow_rl.controllers.registry.make_policy): its router serves requests and its
    # controller labels every step for imitation. The default, "arrow-interval", is Arrow's
    # Algorithm 1 router *without* router flips plus the interval controller (Alg. 2 + 3 + the
    # interval form of Alg. 1's flips): the seat a learned controller takes, and the router
    # ``arrow-rl evaluate`` gives checkpoints. None: the backend's default router and no teacher.
    teacher: str | None = "arrow-interval"
    teacher_in_info: bool = True
    arrow: dict[str, Any] = Field(default_factory=dict)   # ArrowConfig fields (tuned constants)

    episode: EpisodeConfig = Field(default_factory=EpisodeConfig)
    action: ActionConfig = Field(default_factory=ActionConfig)
    observation: ObservationConfig = Field(default_factory=ObservationConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    distribution: DistributionConfig | None = None
    # fields of the env-side lookahead teacher (teacher: oracle-moves, envs.teacher_config.MoveOracleConfig;
    # oracle-split, envs.teacher_config.SplitOracleConfig)
    teacher_config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        """An unknown preset fails here, when the env is made, not at its first ``reset`` inside the
        emulator (where the error would also drag in the scheduler limits derived from it)."""
        if value not in PRESET_NAMES:
            raise ValueError(f"unknown preset {value!r}; valid presets: {', '.join(PRESET_NAMES)}")
        return value

    @model_validator(mode="after")
    def _check(self) -> "EnvConfig":
        three_roles = self.action.three_roles or self.observation.kind == "pools"
        if three_roles and not (self.action.three_roles and self.observation.kind == "pools"):
            raise ValueError(f"action.kind={self.action.kind!r} with observation.kind={self.observation.kind!r}: "
                             "the three-role env needs action.kind 'moves' or 'splits' with observation.kind 'pools'")
        if self.observation.kind == "pools" and self.observation.per_instance:
            raise ValueError("observation.per_instance is not available with observation.kind 'pools'")
        if self.observation.load_features != "raw" and self.observation.kind != "pools":
            raise ValueError(f"observation.load_features={self.observation.load_features!r} needs observation.kind "
                             "'pools' (the cluster encoding reports raw rates only)")
        if self.observation.memory and self.observation.kind != "pools":
            raise ValueError("observation.memory needs observation.kind 'pools' (the size-free encoding)")
        if self.distribution is not None and not three_roles:
            raise ValueError("distribution (random sizes and P:D:M splits) needs action.kind 'moves' or 'splits' "
                             "and observation.kind 'pools' (the only size-free encodings)")
        if self.teacher in ENV_TEACHERS and not self.action.three_roles:
            raise ValueError(f"teacher {self.teacher!r} plans over the three-role codecs: set action.kind 'moves' or 'splits'")
        if self.teacher == "oracle-moves" and self.action.kind != "moves":   # it scores the moves' own actions
            raise ValueError("teacher 'oracle-moves' scores the moves codec's actions: set action.kind 'moves' "
                             "(or use teacher 'oracle-split' with action.kind 'splits')")
        if self.teacher in ENV_TEACHERS:   # checked here, not first in a labelling worker after the model is built
            TEACHER_CONFIGS[self.teacher].from_mapping(self.teacher_config)
        if self.teacher in ENV_TEACHERS and self.action.decision_every > 1:
            cadence = self.action.decision_every * self.control_interval_s
            plan = float(self.teacher_config.get("decision_interval_s", 5.0))
            if plan > cadence + 1e-9:   # the teacher would skip decision steps and label them no-op
                raise ValueError(f"teacher_config.decision_interval_s={plan:g} is longer than the policy's decision "
                                 f"cadence action.decision_every x control_interval_s = {cadence:g} s")
        n = self.num_instances
        m = self.action.min_pool_size
        if 2 * m > n:
            raise ValueError(f"action.min_pool_size={m} leaves no valid split of num_instances={n}")
        if self.initial_prefill is not None and not (m <= self.initial_prefill <= n - m):
            raise ValueError(f"initial_prefill={self.initial_prefill} must be in [{m}, {n - m}] "
                             f"(num_instances={n}, action.min_pool_size={m})")
        sizes = self.cluster_sizes
        for size in sizes:
            if 2 * m > size:
                raise ValueError(f"episode.num_instances contains {size}: action.min_pool_size={m} "
                                 "leaves no valid split")
            if self.initial_prefill is not None and not (m <= self.initial_prefill <= size - m):
                raise ValueError(f"initial_prefill={self.initial_prefill} is not a valid split of "
                                 f"episode.num_instances entry {size}")
        for name, value in (("action.max_instances", self.action.max_instances),
                            ("observation.max_instances", self.observation.max_instances)):
            if value is not None and value < max(sizes):
                raise ValueError(f"{name}={value} is smaller than the largest cluster size {max(sizes)}")
        return self

    @property
    def cluster_sizes(self) -> list[int]:
        """The cluster sizes episodes may have (``distribution.num_instances``, ``episode.num_instances``
        or ``[num_instances]``)."""
        if self.distribution is not None:
            lo, hi = self.distribution.num_instances
            return list(range(lo, hi + 1))
        return list(self.episode.num_instances) if self.episode.num_instances else [self.num_instances]

    @property
    def max_cluster_size(self) -> int:
        return max(self.cluster_sizes)

    @property
    def start_prefill(self) -> int:
        """Initial prefill count: ``initial_prefill`` or half the cluster (Arrow §6.1: 4P4D of 8)."""
        return self.initial_prefill if self.initial_prefill is not None else self.num_instances // 2

    @classmethod
    def from_yaml(cls, path: str | Path) -> "EnvConfig":
        """Load a YAML file; errors name the file and the offending field."""
        data = read_config_mapping(path, "env config")
        data = data.get("env", data)  # allow the env block of a training config
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_saved(cls, data: dict[str, Any], source: str = "<saved env config>") -> "EnvConfig":
        """The env a saved config (a checkpoint's ``env_config``) describes, fields added since it
        was saved taking the value it was trained with (``SAVED_ENV_DEFAULTS``), not today's default."""
        return cls.from_dict(with_saved_defaults(data), source=source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> "EnvConfig":
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise EnvConfigError(source, exc) from None


# What an env config saved before a field existed was trained with, where that differs from the
# field's default now (``EnvConfig.from_saved``): a checkpoint records its env, and a field added
# later must not change that env under it.
SAVED_ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "action": {"distinct_moves": False},
    "episode": {"end": "terminate"},
}


def with_saved_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a saved env config mapping) with ``SAVED_ENV_DEFAULTS`` filled in where absent."""
    out = dict(data)
    for block, fields in SAVED_ENV_DEFAULTS.items():
        given = out.get(block)
        if isinstance(given, dict):
            out[block] = {**fields, **given}
        elif given is None and block in out:
            continue
        else:
            out[block] = dict(fields)
    return out


class EnvConfigError(ValueError):
    """An env config that does not validate. The message names the source and each field; ``located``
    restates it for an env block inside a larger file (a training config's ``env:``), so the user
    reads the file they wrote and the field path inside it, in one line."""

    def __init__(self, source: str, error: ValidationError) -> None:
        self.source, self.error = source, error
        super().__init__(f"env config {source}: {format_validation_error(error)}")

    def located(self, source: str, prefix: str) -> str:
        """``<source>: <prefix><field>: <problem>`` for every field, e.g. ``x.yaml: env.preset: ...``."""
        return f"{source}: {format_validation_error(self.error, prefix)}"
