"""``PDClusterEnv``: the prefill/decode cluster seen from the instance-scheduling controller's seat.

One step = one control interval of cluster time: apply the action's role flips, advance the
cluster ``control_interval_s``, observe the metrics window. This is exactly the loop of
``arrow_rl.evaluation.runner.run_policy`` (advance → act → apply flips), so a policy trained here
is evaluated under the same rules, and an env driven by the Arrow interval controller's actions
reproduces ``arrow-rl evaluate``'s result for the same seed.

Backend-neutral: the env uses only the ``Cluster`` interface; the cluster comes from a
``cluster_factory`` (default: the emulator, see ``envs.backends``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from arrow_rl.cluster.base import SLO, Cluster, Flip, MetricsWindow, Role
from arrow_rl.control import ControlState
from arrow_rl.workload.generators import generate, parse_spec
from arrow_rl.workload.workload import Workload

from envs.actions import ActionCodec
from envs.backends import ClusterFactory, emulator_factory
from envs.config import ENV_TEACHERS, EnvConfig
from envs.episode_end import EndJudgement, EpisodeOutcomes
from envs.episode_load import EpisodeLoad, after_warmup, superposed_generator, superposed_trace
from envs.observation import ObservationBuilder
from envs.reward import RewardTerms, reward_from_counts, step_reward, terminal_reward
from envs.teachers import TEACHERS

_TRACE_CACHE: dict[str, Workload] = {}
RESET_OPTIONS = frozenset({"workload", "duration_s", "trace", "start_s", "rate_scale", "cluster_seed", "num_instances"})


def load_trace_cached(name: str) -> Workload:
    """A bundled trace name or a file path, loaded once per process (resets must be cheap)."""
    if name not in _TRACE_CACHE:
        from arrow_rl.workload.loaders import load_workload

        wl = load_workload(name)
        if len(wl) == 0:
            raise ValueError(f"episode.traces: trace {name!r} has no requests")
        _TRACE_CACHE[name] = wl
    return _TRACE_CACHE[name]


def _option_number(options: dict, key: str, *, positive: bool = False) -> float:
    """``options[key]`` as a finite float (>= 0, or > 0 with ``positive``); the message names the key."""
    v = options[key]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"reset(options[{key!r}]) must be a number, got {v!r}")
    x = float(v)
    if not math.isfinite(x) or x < 0 or (positive and x == 0):
        raise ValueError(f"reset(options[{key!r}]) must be a finite number {'> 0' if positive else '>= 0'}, got {v!r}")
    return x


def _option_int(options: dict, key: str) -> int:
    v = options[key]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"reset(options[{key!r}]) must be an integer, got {v!r}")
    return int(v)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_config(config: EnvConfig | dict | str | Path | None, overrides: dict[str, Any]) -> EnvConfig:
    """``EnvConfig`` from an instance, a mapping or a YAML path, with keyword overrides merged in
    (nested mappings merge key by key, so ``episode={"duration_s": 30}`` keeps the traces)."""
    if isinstance(config, (str, Path)):
        config = EnvConfig.from_yaml(config)
    if config is None:
        base: dict = {}
    elif isinstance(config, EnvConfig):
        if not overrides:
            return config
        base = config.model_dump()
    elif isinstance(config, dict):
        base = config
    else:
        raise TypeError(f"config must be an EnvConfig, a mapping or a YAML path, got {type(config).__name__}")
    return EnvConfig.from_dict(_merge(base, overrides), source="PDClusterEnv(...)")


def make_encoders(config: EnvConfig, num_instances: int, slo: SLO | None = None) -> tuple[ObservationBuilder, ActionCodec]:
    """The observation builder and action codec the env uses for a cluster of ``num_instances``.

    A deployed controller (e.g. a checkpoint) should build its encoders here from the env config it
    was trained with, so that padding sizes (``max_instances``, defaulting to the largest cluster
    size the config allows) and therefore the spaces match training exactly.
    """
    top = config.max_cluster_size
    obs_cfg = config.observation.model_copy(update={"max_instances": config.observation.max_instances or top})
    act_cfg = config.action.model_copy(update={"max_instances": config.action.max_instances or top})
    slo = slo or SLO(config.slo_ttft_s, config.slo_tpot_s)
    if config.action.three_roles:   # the size-free three-role encodings
        from envs.pool_observation import PoolObservationBuilder
        from envs.split_codec import three_role_codec

        return (PoolObservationBuilder(slo, num_instances, obs_cfg, min_pool_size=config.action.min_pool_size),
                three_role_codec(act_cfg, num_instances))
    return (ObservationBuilder(slo, num_instances, obs_cfg, min_pool_size=config.action.min_pool_size),
            ActionCodec(act_cfg, num_instances))


class PDClusterEnv(gym.Env):
    """Gymnasium env over a PD-disaggregated cluster; the agent chooses role flips.

    Spaces: see ``envs.observation`` (``OBSERVATION_FEATURES``) and ``envs.actions``.
    ``action_masks()`` returns the valid actions (sb3-contrib MaskablePPO duck-typing).

    ``reset(options=...)`` accepts ``workload`` (a ``Workload`` to serve, after the warm-up if one
    is configured, with an optional ``duration_s`` arrival window), or any of ``trace``, ``start_s``
    (a compressed window only), ``rate_scale`` (the factor itself, also under ``knee_factor``),
    ``cluster_seed``, ``num_instances`` to pin what would otherwise be drawn at random.

    ``info`` every step: ``teacher_action`` (the Arrow interval controller's choice in this env's
    action encoding; -1 when ``teacher_in_info`` is off), ``teacher_flips``, ``action_mask``,
    ``invalid_action``, ``applied_flips`` (this step), ``num_prefill``, ``reward_terms``; on the
    decision steps of a teacher that scores its candidates (``oracle-moves``) also
    ``teacher_scores``, the score of every action it tried (NaN: not tried). On the
    last step also ``slo_attainment``, ``goodput``, ``flip_count`` (= ``episode_flips``),
    ``episode_duration_s`` and ``episode_stats`` (all of them plus the episode's description).

    Warm start (``episode.warmup_s``): ``reset`` first serves the warm-up under
    ``episode.warmup_controller``; requests arriving in it are served but never rewarded or counted,
    as the suite's ``count_from_s`` leaves them out (``envs.episode_load`` builds the load, by
    compression or by the suite's superposition, ``episode.load_mode``).

    Episode end (``episode.end``, ``envs.episode_end``): the horizon is ``run_policy``'s (after it no
    unfinished request can meet its SLOs), capped at ``drain_s`` after the arrival window.
    ``truncate`` (default): ``terminated`` once every counted request is decided (served, rejected,
    or a certain miss by the suite's ``CertainMisses``); ``truncated`` when the horizon comes first,
    charging only the in-flight requests whose miss is already certain; the rest are undecided,
    neither charged nor counted in ``slo_attainment``, and a learner bootstraps their value (SB3
    does on ``TimeLimit.truncated``). ``terminate``: the horizon is terminal and every unfinished
    request is charged as a miss (``truncated`` always False).

    The teacher (``teacher_action``) proposes before the agent acts; after the step it is told
    which flips took effect (``sync_applied``), so its cooldown and sustain counters follow the
    agent's flips, not its own unapplied proposals.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, config: EnvConfig | dict | str | Path | None = None, *,
                 cluster_factory: ClusterFactory | None = None, render_mode: str | None = None,
                 **overrides: Any) -> None:
        super().__init__()
        self.config = resolve_config(config, overrides)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.cluster_factory: ClusterFactory = cluster_factory or emulator_factory
        cfg = self.config
        self.slo = SLO(cfg.slo_ttft_s, cfg.slo_tpot_s)
        # Spaces are sized for the largest cluster an episode may have (padding / masks cover the rest).
        self._use_size(cfg.cluster_sizes[0] if len(cfg.cluster_sizes) == 1 else cfg.max_cluster_size)
        self.action_space = self.codec.space
        self.observation_space = self.obs_builder.observation_space
        self.cluster: Cluster | None = None
        self.teacher = None
        self.workload: Workload | None = None
        self._state: ControlState | None = None
        self._decision_step = True   # action.decision_every: may the policy move on this step
        self._timeline: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ episodes
    def _use_size(self, n: int) -> None:
        """Encoders for a cluster of ``n`` instances (spaces stay those of the largest size)."""
        self.num_instances = n
        self.obs_builder, self.codec = make_encoders(self.config, n, self.slo)

    def _draw_workload(self, options: dict, draw: Any = None, num_instances: int | None = None) -> EpisodeLoad:
        """The episode's load (workload, warm-up end, end of the counted arrival window, description).
        ``draw`` (an ``envs.distribution.EpisodeDraw``) supplies a generator spec when it drew one;
        ``num_instances`` is the episode's cluster size, which ``episode.knee_factor`` needs."""
        ep = self.config.episode
        if draw is not None and draw.generator is not None and "workload" not in options and "trace" not in options:
            return self._generated(parse_spec(draw.generator), None)
        if "workload" in options:
            wl = options["workload"]
            if not isinstance(wl, Workload):
                raise TypeError(f"reset(options['workload']) must be a Workload, got {type(wl).__name__}")
            end = (_option_number(options, "duration_s") if "duration_s" in options
                   else float(wl.arrival_s[-1]) if len(wl) else 0.0)
            return after_warmup(wl, end, ep.warmup_s, {"source": wl.name})
        scale, relative = self._draw_rate_scale(options)
        knee = (num_instances, scale) if relative else None
        if ep.generator is not None and "trace" not in options:
            try:
                spec = parse_spec(ep.generator)
            except Exception as exc:
                raise ValueError(f"env config: field 'episode.generator': {exc}") from None
            return self._generated(spec, scale, knee)
        return self._trace_window(self._draw_trace_name(options), scale, options, knee)

    def _knee_scale(self, sample: Workload, base_rate: float, knee: tuple[int | None, float], key: str | None) -> float:
        """The rate factor that puts the episode at ``f`` times its knee: f x the estimated serving
        rate of ``sample``'s mix on this cluster (``envs.serving_estimate``) / the load's own mean rate."""
        from envs.serving_estimate import estimated_serving_rate

        n, f = knee
        rate = estimated_serving_rate(sample, self.config.preset, n or self.num_instances, self.slo, key)
        return f * rate / base_rate

    def _generated(self, spec: Any, scale: float | None, knee: tuple[int | None, float] | None = None) -> EpisodeLoad:
        """A workload from generator ``spec`` (seeded from the env's RNG), its arrivals ``scale`` times
        as fast (None: as generated, and the description names no scale), after the warm-up."""
        from arrow_rl.evaluation.protocol import generator_mean_rate

        ep = self.config.episode
        seed = int(self.np_random.integers(2**31 - 1))
        base = generate(spec, seed) if knee is not None or ep.load_mode == "compress" else None
        if knee is not None:
            scale = self._knee_scale(base, generator_mean_rate(spec), knee, None)
        if ep.load_mode == "superpose":
            return superposed_generator(spec, scale, seed, ep.warmup_s)
        desc: dict[str, Any] = {"source": f"generator:{spec.kind}", "seed": seed}
        if scale is None:
            return after_warmup(base, float(spec.horizon_s), ep.warmup_s, desc)
        wl = base.scaled(scale) if scale != 1.0 else base
        span = spec.horizon_s  # the generator's arrival window
        return after_warmup(wl, float(span) / scale, ep.warmup_s, {**desc, "rate_scale": scale})

    def _draw_rate_scale(self, options: dict) -> tuple[float, bool]:
        """The episode's rate factor and whether it is relative to the knee: ``options['rate_scale']``,
        else ``f`` drawn from ``episode.knee_factor`` (relative), else drawn from ``episode.rate_scale``."""
        ep = self.config.episode
        if "rate_scale" in options:
            return _option_number(options, "rate_scale", positive=True), False
        if ep.knee_factor is not None:
            lo, hi = ep.knee_factor
            return (float(self.np_random.uniform(lo, hi)) if hi > lo else lo), True
        lo, hi = ep.rate_scale
        if ep.log_uniform_rate_scale:
            return float(math.exp(self.np_random.uniform(math.log(lo), math.log(hi)))), False
        return (float(self.np_random.uniform(lo, hi)) if hi > lo else lo), False

    def _draw_trace_name(self, options: dict) -> str:
        """``options['trace']``, else one of ``episode.traces`` (by ``trace_weights``)."""
        ep = self.config.episode
        if "trace" in options:
            if not isinstance(options["trace"], (str, Path)):
                raise ValueError(f"reset(options['trace']) must be a trace name or path, got {options['trace']!r}")
            return str(options["trace"])
        if len(ep.traces) == 1:
            return ep.traces[0]
        w = np.asarray(ep.trace_weights if ep.trace_weights is not None else [1.0] * len(ep.traces), dtype=float)
        return ep.traces[int(self.np_random.choice(len(ep.traces), p=w / w.sum()))]

    def _trace_window(self, name: str, scale: float, options: dict,
                      knee: tuple[int | None, float] | None = None) -> EpisodeLoad:
        """``episode.duration_s`` of trace ``name`` at ``scale`` times its rate, after the warm-up.
        ``superpose``: the suite's copies at seeded offsets. ``compress``: one window, timestamps divided
        by ``scale``, starting at ``options['start_s']``, else at random (``episode.random_start``),
        else at ``episode.start_s``."""
        ep = self.config.episode
        trace = load_trace_cached(name)
        if knee is not None:
            scale = self._knee_scale(trace, trace.mean_rate, knee, name)
        if ep.load_mode == "superpose":
            if "start_s" in options:
                raise ValueError("reset(options['start_s']) pins a compressed window; with episode.load_mode "
                                 "'superpose' the copies' offsets come from the reset seed")
            seed = int(self.np_random.integers(2**31 - 1))
            return superposed_trace(trace, name, scale, seed, ep.duration_s, ep.warmup_s)
        span = ep.duration_s * scale                       # trace seconds that become duration_s
        latest = max(float(trace.arrival_s[-1]) - span, 0.0)
        if "start_s" in options:
            start = _option_number(options, "start_s")
            last = float(trace.arrival_s[-1])
            if trace.window(start, start + span).arrival_s.size == 0:
                # an empty window would score attainment 1.0 for doing nothing
                raise ValueError(f"reset(options['start_s']={start:g}): the {span:g} s window of trace {name!r} "
                                 f"from there has no requests (its arrivals span 0..{last:g} s)")
        elif ep.random_start:
            start = float(self.np_random.uniform(0.0, latest)) if latest > 0 else 0.0
        else:
            start = min(ep.start_s, latest)
        wl = trace.window(start, start + span)
        if scale != 1.0:
            wl = wl.scaled(scale)
        return after_warmup(wl, ep.duration_s, ep.warmup_s, {"source": name, "start_s": start, "rate_scale": scale})

    def _arrow_config(self):
        from arrow_rl.arrow import ArrowConfig

        try:
            return ArrowConfig(**self.config.arrow) if self.config.arrow else None
        except Exception as exc:
            raise ValueError(f"env config: field 'arrow': {exc}") from exc

    def _make_teacher(self):
        """A fresh policy (router + interval controller) per episode, so no state leaks across resets.

        With the moves codec the router is wrapped in ``MixedDispatcher`` (MIXED instances get
        requests; bit-identical to the bare router while there is none), and ``oracle-moves`` /
        ``oracle-split`` are the env-side lookahead teachers (``envs.move_teacher``, ``envs.split_teacher``)."""
        if self.config.teacher is None:
            if not self.config.action.three_roles:
                return None
            from arrow_rl.arrow.router import ArrowRouter
            from arrow_rl.cluster.base import Mode
            from arrow_rl.controllers.baselines import NoFlipController
            from arrow_rl.controllers.registry import Policy

            return Policy("none", Mode.DISAGGREGATED, ArrowRouter(self._arrow_config(), enable_flips=False),
                          NoFlipController("none"), None)
        from arrow_rl.controllers.registry import make_policy

        if self.config.teacher in ENV_TEACHERS:
            policy = make_policy("static:1", self.num_instances, arrow_config=self._arrow_config())
            policy.name, policy.initial_prefill, policy.needs_cluster = self.config.teacher, None, True
            policy.controller = self._env_teacher()
            return policy
        return make_policy(self.config.teacher, self.num_instances, arrow_config=self._arrow_config())

    def _env_teacher(self):
        """The env-side privileged teacher named by ``config.teacher`` (plans on emulator clones)."""
        config_cls, teacher_cls = TEACHERS[self.config.teacher]
        return teacher_cls(self.codec, config_cls.from_mapping(self.config.teacher_config))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - RESET_OPTIONS
        if unknown:
            raise ValueError(f"reset(options=...): unknown keys {sorted(unknown)}; valid: {sorted(RESET_OPTIONS)}")
        # the random draws keep this order (size and split, workload, cluster seed): same seed, same episode
        cfg, split, desc = self._draw_episode(options)
        policy = self._episode_policy(cfg)
        cfg, num_prefill = self._initial_split(cfg, policy, split)
        cluster_seed = self._build_cluster(cfg, policy, num_prefill, options)
        self._start_episode(cfg, desc, cluster_seed)
        self._warm_up(cfg)
        window = self._advance()  # run_policy: advance first, then act
        self._reset_terms = step_reward(window, 0, self._offered_per_step, cfg.reward,
                                        outcomes=self._step_outcomes())
        obs, info = self._observe(window)
        info["episode_desc"] = self._episode_desc
        return obs, info

    def _draw_episode(self, options: dict[str, Any]) -> tuple[EnvConfig, tuple[int, int, int] | None, dict[str, Any]]:
        """Draw the episode's cluster size (and with ``distribution`` its model, SLOs and P:D:M split)
        and its workload; returns the episode's config, the drawn split (or None) and a description.
        ``options`` may gain the trace a distribution drew."""
        cfg = self.config
        sizes = cfg.cluster_sizes
        pinned_n = None
        if "num_instances" in options:
            pinned_n = _option_int(options, "num_instances")
            if pinned_n not in sizes:
                raise ValueError(f"reset(options['num_instances']={pinned_n}) is not one of the configured sizes {sizes}")
        draw = None
        split: tuple[int, int, int] | None = None
        if cfg.distribution is not None:
            from envs.distribution import draw_episode

            draw = draw_episode(self.np_random, cfg.distribution, cfg.episode.duration_s, cfg.action.min_pool_size,
                                num_instances=pinned_n)
            n, split = draw.num_instances, draw.split
            cfg = cfg.model_copy(update={"preset": draw.preset, "slo_ttft_s": draw.slo_ttft_s,
                                         "slo_tpot_s": draw.slo_tpot_s})
            self.slo = SLO(draw.slo_ttft_s, draw.slo_tpot_s)
            if "workload" not in options and draw.trace is not None:
                options.setdefault("trace", draw.trace)
                options.setdefault("rate_scale", draw.trace_rate_scale)
            self._load = self._draw_workload(options, draw, n)
            desc = {**self._load.desc, **draw.describe()}
        else:
            # knee-relative loads need the size first; otherwise the size is drawn after the workload,
            # so that configs without knee_factor keep their RNG stream
            n = self._draw_size(sizes, pinned_n) if cfg.episode.knee_factor is not None else None
            self._load = self._draw_workload(options, num_instances=n)
            desc = dict(self._load.desc)
            if n is None:
                n = self._draw_size(sizes, pinned_n)
        self.workload = self._load.workload
        if n != self.num_instances or draw is not None:
            self._use_size(n)
        if n != cfg.num_instances:
            cfg = cfg.model_copy(update={"num_instances": n})
        self._episode_config = cfg
        return cfg, split, desc

    def _draw_size(self, sizes: list[int], pinned: int | None) -> int:
        """The episode's cluster size: pinned by ``reset`` options, else drawn from ``sizes``."""
        if pinned is not None:
            return pinned
        if len(sizes) > 1:  # drawn only when there is a choice, so other configs keep their RNG stream
            return sizes[int(self.np_random.integers(len(sizes)))]
        return sizes[0]

    def _episode_policy(self, cfg: EnvConfig) -> Any:
        """The episode's teacher policy (its router serves the requests), checked against the env."""
        policy = self._make_teacher()
        mode = getattr(policy, "mode", "disaggregated") if policy is not None else "disaggregated"
        mode = getattr(mode, "value", mode)
        if mode != "disaggregated":
            raise ValueError(f"env config: field 'teacher'={cfg.teacher!r} runs in {mode} mode; the env "
                             "needs a disaggregated policy (it chooses prefill/decode roles)")
        if getattr(policy, "initial_mixed", 0) and not cfg.action.three_roles:
            raise ValueError(f"env config: field 'teacher'={cfg.teacher!r} has MIXED instances; the env's action "
                             "codec knows PREFILL and DECODE only (set action.kind 'moves', observation.kind 'pools')")
        return policy

    def _initial_split(self, cfg: EnvConfig, policy: Any, split: tuple[int, int, int] | None) -> tuple[EnvConfig, int]:
        """The episode's starting prefill count, and its config with the MIXED count the emulator
        starts with (three-role envs): the drawn split, else the config's, else the policy's, else
        half of the non-MIXED instances."""
        three_roles = cfg.action.three_roles
        if split is not None:
            num_prefill, num_mixed = split[0], split[2]
        else:
            num_mixed = int(cfg.emulator.get("num_mixed", 0) or 0) if three_roles else 0
            num_mixed = num_mixed or int(getattr(policy, "initial_mixed", 0) or 0)
            num_prefill = (cfg.initial_prefill or getattr(policy, "initial_prefill", None)
                           or (self.num_instances - num_mixed) // 2)
        if three_roles:
            cfg = cfg.model_copy(update={"emulator": {**cfg.emulator, "num_mixed": num_mixed}})
        return cfg, num_prefill

    def _build_cluster(self, cfg: EnvConfig, policy: Any, num_prefill: int, options: dict[str, Any]) -> int:
        """Build the episode's cluster (``self.cluster``) and bind its teacher; returns the cluster seed."""
        router = policy.router if policy is not None else None
        if cfg.action.three_roles and router is not None:
            from arrow_rl.arrow.mixed import MixedDispatcher

            if not isinstance(router, MixedDispatcher):   # MIXED instances must get requests
                router = MixedDispatcher(router)
        cluster_seed = (_option_int(options, "cluster_seed") if "cluster_seed" in options
                        else int(self.np_random.integers(2**31 - 1)))
        self.cluster = self.cluster_factory(self.workload, cfg, router, num_prefill, cluster_seed)
        if self.cluster.info.num_instances != cfg.num_instances:
            raise ValueError(f"cluster_factory built {self.cluster.info.num_instances} instances, "
                             f"config.num_instances={cfg.num_instances}")
        self.teacher = (policy.controller if policy is not None and cfg.teacher is not None and cfg.teacher_in_info
                        else None)
        if self.teacher is not None:
            self.teacher.reset(self.cluster.info)
            if getattr(policy, "needs_cluster", False):  # a clairvoyant teacher (oracle) plans on clones
                self.teacher.bind_cluster(self.cluster)
        return cluster_seed

    def _start_episode(self, cfg: EnvConfig, desc: dict[str, Any], cluster_seed: int) -> None:
        """The episode's horizon, counters and observation state, before its first window."""
        from arrow_rl.arrow import default_profiles
        from arrow_rl.evaluation.runner import last_useful_time

        assert self.cluster is not None and self.workload is not None
        self._profiles = default_profiles(self.cluster.info)
        self._count_from_s = self._load.count_from_s
        self._arrival_end_s = self._load.arrival_end_s
        self._outcomes = EpisodeOutcomes(self.workload, self.slo, self._count_from_s, cfg.episode.end)
        counted_span = self._arrival_end_s - self._count_from_s
        n_steps = max(1, math.ceil(counted_span / cfg.control_interval_s - 1e-9))
        self._offered_per_step = self._outcomes.counted / n_steps
        # Episode end = run_policy's horizon (nothing can change attainment after it), capped by drain_s.
        self._end_s = last_useful_time(self.workload, self.slo)
        if cfg.episode.drain_s is not None:
            self._end_s = min(self._end_s, self._arrival_end_s + cfg.episode.drain_s)
        self._episode_desc = {**desc, "requests": self._outcomes.counted, "cluster_seed": cluster_seed,
                              "num_instances": self.num_instances}
        if self._count_from_s > 0:
            self._episode_desc.update(warmup_s=self._count_from_s, warmup_requests=self._outcomes.first)
        self._steps = 0
        self._flip_count = 0
        self._return = 0.0
        self._teacher_agree = 0
        self._done = False
        self.obs_builder.reset()
        if hasattr(self.obs_builder, "set_profile"):   # pools: load in units of this episode's model
            from envs.pool_observation import reference_profile

            self.obs_builder.set_profile(reference_profile(self._profiles))
        self._timeline = {k: [] for k in ("t", "num_prefill", "ttft_p90", "tpot_mean", "itl_mean", "arrivals")}

    def _warm_up(self, cfg: EnvConfig) -> None:
        """Serve the warm-up (``episode.warmup_s``) before the agent's first step, as the suite does
        before it counts: the episode's router serves, ``episode.warmup_controller`` flips, and each
        window enters the observation history, so the first observation is of a running cluster."""
        until = self._count_from_s
        if until <= 0:
            return
        assert self.cluster is not None
        controller = self._warmup_controller(cfg)
        dt = cfg.control_interval_s
        while not self.cluster.done and self.cluster.now < until - 1e-9:
            window = self.cluster.advance(min(dt, until - self.cluster.now))
            state = ControlState(self.cluster.now, window, tuple(self.cluster.instances()))
            self.obs_builder.build(state)
            if controller is not None and not self.cluster.done:
                for f in controller.act(state):
                    self.cluster.flip(f.instance_id, f.role)

    def _warmup_controller(self, cfg: EnvConfig) -> Any:
        """The controller that flips during the warm-up: the episode's teacher when it is that same
        policy (its counters then run on from the warm-up), else a fresh one."""
        spec = cfg.episode.warmup_controller
        if self.teacher is not None and cfg.teacher == spec and hasattr(self.teacher, "act") \
                and not hasattr(self.teacher, "choose"):
            return self.teacher
        from arrow_rl.controllers.registry import make_policy

        policy = make_policy(spec, self.num_instances, arrow_config=self._arrow_config())
        controller = policy.controller
        if controller is not None:
            controller.reset(self.cluster.info)
            if policy.needs_cluster:   # a clairvoyant controller (oracle) plans on clones
                controller.bind_cluster(self.cluster)
        return controller

    def _step_outcomes(self) -> tuple[int, int] | None:
        """(good, bad) counted requests that ended since the last step; None without a warm-up, where
        every request counts and the window's own counts are the same (``envs.reward``)."""
        counts = self._outcomes.step_counts(self.cluster)
        return counts if self._count_from_s > 0 else None

    def _observe(self, window: MetricsWindow) -> tuple[Any, dict[str, Any]]:
        assert self.cluster is not None
        views = list(self.cluster.instances())
        state = ControlState(self.cluster.now, window, views)
        self._state = state
        obs = self.obs_builder.build(state)
        num_prefill = sum(1 for v in views if v.role is Role.PREFILL)
        # action.decision_every: between decision steps the no-op is the only valid action
        decides = self._steps % self.config.action.decision_every == 0
        self._decision_step = decides
        mask = self.codec.masks_for(views) if decides else self._noop_mask()
        teacher_flips: list[Flip] = []
        teacher_action = -1
        teacher_scores = None
        if self.teacher is not None:
            choose = getattr(self.teacher, "choose", None)
            if choose is not None:   # a teacher that plans in the env's own action space (oracle-moves)
                teacher_action = int(choose(state)) if decides else 0
                teacher_flips = list(self.codec.flips(teacher_action, views, self._profiles) or [])
                if decides and hasattr(self.teacher, "candidate_scores"):
                    teacher_scores = self.teacher.candidate_scores()
                    if np.isnan(teacher_scores).all():   # between the teacher's own decisions
                        teacher_scores = None
            else:
                teacher_flips = list(self.teacher.act(state))   # runs every step: its counters see every window
                if not decides:
                    teacher_flips = []
                teacher_action = self.codec.encode(teacher_flips, views)
        self._teacher_action = teacher_action
        self._teacher_flips = teacher_flips
        tl = self._timeline
        tl["t"].append(state.now)
        tl["num_prefill"].append(num_prefill)
        tl["ttft_p90"].append(window.prefill.ttft_p90)
        tl["tpot_mean"].append(window.decode.tpot_mean)
        tl["itl_mean"].append(window.decode.itl_mean)
        tl["arrivals"].append(window.arrivals)
        info = {"teacher_action": teacher_action, "teacher_flips": teacher_flips, "action_mask": mask,
                "num_prefill": num_prefill, "time_s": state.now, "decision_step": decides}
        if teacher_scores is not None:
            info["teacher_scores"] = teacher_scores
        if self.config.action.three_roles:
            from envs.moves import role_counts

            info["split"] = role_counts(views)
        return obs, info

    # ------------------------------------------------------------------ stepping
    def _advance(self) -> MetricsWindow:
        """One control interval, shortened to end exactly at the horizon (as ``run_policy`` does)."""
        dt = self.config.control_interval_s
        left = self._end_s - self.cluster.now
        return self.cluster.advance(min(dt, left) if left > 1e-9 else dt)

    def _action_index(self, action: Any) -> int:
        """The action as an index of ``Discrete(n)``: an integer (Python, numpy, or a one-element
        integer array as VecEnvs pass). A float such as 1.7 or a string such as '3' is refused
        rather than truncated or parsed."""
        n = int(self.action_space.n)
        arr = np.asarray(action) if not isinstance(action, (str, bytes)) else None
        if arr is None or arr.size != 1 or arr.dtype.kind not in "iu":
            raise ValueError(f"step(action): expected an integer in [0, {n}), got {action!r}")
        a = int(arr.reshape(()).item())
        if not 0 <= a < n:
            raise ValueError(f"step(action): {a} is outside the action space Discrete({n})")
        return a

    def step(self, action):
        if self.cluster is None or self._state is None:
            raise RuntimeError("PDClusterEnv.step called before reset()")
        if self._done:
            raise RuntimeError("PDClusterEnv.step called after the episode ended; call reset()")
        cfg = self.config
        a = self._action_index(action)
        flips = self.codec.flips(a, self._state.instances, self._profiles) if self._decision_step or a == 0 else None
        invalid = flips is None
        if invalid:  # masked action taken anyway: a no-op, flagged
            flips = []
        for f in flips:
            self.cluster.flip(f.instance_id, f.role)
        if self.teacher is not None:
            if a == self._teacher_action:
                self._teacher_agree += 1
            sync = getattr(self.teacher, "sync_applied", None)
            if sync is not None:  # the teacher's counters follow what was applied (class docstring)
                sync(self._state.now, self._teacher_flips, flips)
        self._flip_count += len(flips)
        window = self._advance()
        self._steps += 1
        outcomes = self._step_outcomes()
        judged = self._outcomes.judge(self.cluster, at_horizon=self.cluster.now >= self._end_s - 1e-9)
        terms = step_reward(window, len(flips), self._offered_per_step, cfg.reward,
                            unfinished_at_end=judged.charged_at_end, outcomes=outcomes)
        if self._reset_terms is not None:
            # The window reset() advanced has no step of its own; its requests count in the first step,
            # so that every offered request is rewarded exactly once (see envs.reward).
            # The merged counts are rewarded once, so a bounded pending term bounds the step.
            r0 = self._reset_terms
            good, bad, pending = terms.good + r0.good, terms.bad + r0.bad, terms.pending + r0.pending
            terms = RewardTerms(good, bad, pending, terms.flips,
                                reward_from_counts(good, bad, pending, terms.flips, self._offered_per_step, cfg.reward))
            self._reset_terms = None
        if judged.terminated or judged.truncated:
            arrival_steps = self._outcomes.counted / max(self._offered_per_step, 1e-6)
            bonus = terminal_reward(self._outcomes.attainment(judged), arrival_steps, cfg.reward)
            terms = dataclasses.replace(terms, terminal=bonus, reward=terms.reward + bonus)
        self._return += terms.reward
        obs, info = self._observe(window)
        info.update(invalid_action=invalid, applied_flips=flips, reward_terms=terms)
        if judged.terminated or judged.truncated:
            self._done = True
            stats = self._episode_stats(judged)
            info.update(slo_attainment=stats["slo_attainment"], goodput=stats["goodput"],
                        flip_count=stats["flip_count"], episode_flips=stats["flip_count"],
                        episode_duration_s=stats["duration_s"], episode_stats=stats)
        return obs, terms.reward, judged.terminated, judged.truncated, info

    def _episode_stats(self, judged: EndJudgement) -> dict[str, Any]:
        books = self._outcomes
        good = books.good
        span = self._arrival_end_s - self._count_from_s
        minutes = max(self.cluster.now, 1e-9) / 60.0
        return {
            **self._episode_desc,
            "offered": books.counted,
            "within_slo": good,
            "unfinished": books.counted - books.ended,
            "charged_at_end": judged.charged_at_end,
            "undecided": judged.undecided,
            "truncated": judged.truncated,
            "slo_attainment": books.attainment(judged),
            "goodput": good / span if span > 0 else 0.0,
            "flip_count": self._flip_count,
            "flips_per_min": self._flip_count / minutes,
            "duration_s": self.cluster.now,
            "steps": self._steps,
            "return": self._return,
            "teacher_agreement": self._teacher_agree / self._steps if self.teacher is not None and self._steps else math.nan,
        }

    # ------------------------------------------------------------------ masks, teacher, render
    def action_masks(self) -> np.ndarray:
        """Valid actions in the current state (True = allowed). Used by sb3-contrib MaskablePPO."""
        if self._state is None:
            return np.ones(int(self.action_space.n), dtype=bool)
        if not self._decision_step:
            return self._noop_mask()
        return self.codec.masks_for(self._state.instances)

    def _noop_mask(self) -> np.ndarray:
        mask = np.zeros(int(self.action_space.n), dtype=bool)
        mask[0] = True
        return mask

    def teacher_action(self) -> int:
        """The Arrow interval controller's action for the current state (-1 if disabled)."""
        return self._teacher_action

    @property
    def control_state(self) -> ControlState | None:
        """The last ``ControlState`` (what a deployed controller would see now)."""
        return self._state

    @property
    def offered_per_step(self) -> float:
        """λ of ``envs.reward``: the episode's counted requests per arrival-window step (the scale
        a caller needs to recompute the return from ``reward_terms`` under other weights)."""
        return self._offered_per_step

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        from envs.render import render_timeline

        return render_timeline(self._timeline, self.slo, self.num_instances,
                               title=str(self._episode_desc.get("source", "")) if self.workload is not None else "")

    def close(self) -> None:
        close = getattr(self.cluster, "close", None)
        if callable(close):
            close()
        self.cluster = None
