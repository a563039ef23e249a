"""The size-free observation (``ObservationConfig.kind = "pools"``): a fixed-length vector
whatever the cluster size, built from per-role pool statistics relative to the SLOs.

Per pool (PREFILL, DECODE, MIXED): its fraction of the cluster, its queued prefill work as the mean
instance Σ T(rp) / SLO_TTFT (Arrow §5.5's prefill load), its mean decode load (token latency /
SLO_TPOT, §5.5), its p90 TTFT / SLO_TTFT and p90 TPOT / SLO_TPOT over the window, mean KV use, mean
busy fraction, and queued requests per instance. An empty pool reads all zeros beside its fraction 0.
Cluster level: arrivals and arriving prompt tokens per second per instance, the prompt/output mix,
finished requests per instance, the window's miss fraction and TTFT/TPOT violation shares, queued
requests already predicted to miss TTFT per instance, half-flipped instances, time since the last role
change, and 1/N (how coarse one move is). Nothing grows with N, so one policy runs on 4 to 32 instances.

With ``observation.load_features: capacity`` the three raw rates (arrivals, arriving prompt tokens and
finished requests per second per instance) become model-relative: the share of an instance's time
the arrivals' prefills need (rate x T(mean prompt), Arrow §5.3's T), the share of an instance's
decode context their decodes need (Little's law: rate x output x SLO_TPOT x mean context /
min(MT(SLO_TPOT), KV capacity)), the prefill share of those two, and finished / arrived. The same
raw rate is a light load for a fast model and an overload for a slow one; these features are not,
which is what a checkpoint needs on a model it never saw.

The same builder runs inside ``PDClusterEnv`` and inside a deployed checkpoint (``agents.controller``),
so it depends only on ``arrow_rl.cluster.base`` / ``arrow_rl.control``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
from gymnasium import spaces

from arrow_rl.cluster.base import SLO, InstanceView, MetricsWindow, PoolStats, Role
from arrow_rl.control import ControlState
from arrow_rl.perf.profile import InstanceProfile

from envs.config import ObservationConfig
from envs.memory_features import ObservationMemory, memory_features
from envs.observation import (WINDOW_FEATURES, Feature, FrameHistory, _ratio, finite_clipped, flip_age, half_flipped,
                              window_features)
from envs.offered_load import offered_load_of

if TYPE_CHECKING:
    from arrow_rl.arrow.flip_selection import ProfileSource

POOLS: tuple[tuple[str, Role], ...] = (("p", Role.PREFILL), ("d", Role.DECODE), ("m", Role.MIXED))

_POOL_FEATURES: tuple[tuple[str, float, str], ...] = (
    ("fraction", 1.0, "instances of the role / instances"),
    ("prefill_load", 10.0, "mean instance Σ T(rp) / SLO_TTFT (Arrow §5.5 prefill load: queued prefill work)"),
    ("decode_load", 10.0, "mean instance decode load: token latency in the window / SLO_TPOT (§5.5)"),
    ("ttft_p90_slo", 10.0, "p90 TTFT of first tokens the pool emitted in the window / SLO_TTFT"),
    ("tpot_p90_slo", 10.0, "p90 TPOT of requests that finished on the pool in the window / SLO_TPOT"),
    ("kv_usage", 1.0, "mean KV usage"),
    ("busy", 1.0, "mean busy fraction in the window"),
    ("waiting", 12.0, "log1p(queued requests / instance)"),
)

POOL_OBSERVATION_FEATURES: tuple[Feature, ...] = tuple(
    Feature(f"{tag}_{name}", 0.0, high, f"{role.value} pool: {doc}")
    for tag, role in POOLS for name, high, doc in _POOL_FEATURES
) + (
    *WINDOW_FEATURES,
    Feature("pending_ttft_misses", 0.0, 12.0, "log1p(queued requests predicted to miss TTFT / instances)"),
    Feature("half_flipped_fraction", 0.0, 1.0, "instances still holding work of a role they left (§5.5) / instances"),
    Feature("time_since_flip", 0.0, 1.0, "seconds since the last role change / flip_age_scale_s, saturating at 1"),
    Feature("inverse_size", 0.0, 1.0, "1 / instances: how large one instance is in the fractions above"),
)
POOL_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in POOL_OBSERVATION_FEATURES)

# ``load_features: capacity``: the raw rates they replace, in place, and one appended feature
_RAW_RATE_FEATURES = ("arrival_rate", "arrival_prompt_rate", "finished_rate")
_RAW_RATE_INDEX = tuple(POOL_FEATURE_NAMES.index(name) for name in _RAW_RATE_FEATURES)
_CAPACITY_FEATURES: dict[str, Feature] = {
    "arrival_rate": Feature("offered_prefill", 0.0, 4.0,
                            "arrivals/s per instance x T(mean prompt): the share of an instance's time their prefills need"),
    "arrival_prompt_rate": Feature("offered_decode", 0.0, 4.0,
                                   "arrivals/s per instance x mean output x SLO_TPOT x mean context / "
                                   "min(MT(SLO_TPOT), KV capacity): the share of an instance's decode context "
                                   "their decodes need"),
    "finished_rate": Feature("finished_per_arrival", 0.0, 4.0, "requests finished / requests arrived in the window"),
}
OFFERED_PREFILL_SHARE = Feature("offered_prefill_share", 0.0, 1.0,
                                "offered_prefill / (offered_prefill + offered_decode): the split the load asks for")


def pool_features(config: ObservationConfig) -> tuple[Feature, ...]:
    """The frame's features for ``config`` (``load_features`` changes it)."""
    feats = POOL_OBSERVATION_FEATURES
    if config.load_features == "capacity":
        feats = tuple(_CAPACITY_FEATURES.get(f.name, f) for f in feats) + (OFFERED_PREFILL_SHARE,)
    return feats


def _bounds(features: Sequence[Feature]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([f.low for f in features], dtype=np.float32),
            np.array([f.high for f in features], dtype=np.float32))


_LOW, _HIGH = _bounds(POOL_OBSERVATION_FEATURES)
_CAPACITY_LOW, _CAPACITY_HIGH = _bounds(pool_features(ObservationConfig(kind="pools", load_features="capacity")))


def reference_profile(profiles: "ProfileSource") -> InstanceProfile | None:
    """The profile load is measured against: the lowest-numbered instance's (clusters of one instance
    type, as every preset and Arrow §6's fleets are). None when the cluster has none."""
    from arrow_rl.arrow.flip_selection import profile_of

    if isinstance(profiles, Mapping):
        return profiles[min(profiles)] if profiles else None
    return profile_of(profiles, 0)


def offered_load(w: MetricsWindow, n: int, slo: SLO, profile: InstanceProfile,
                 kv_capacity_tokens: float = math.inf, output_tokens_mean: float | None = None) -> tuple[float, float]:
    """(prefill, decode) load the window's arrivals offer one instance, each in units of its capacity.

    Prefill: arrivals/s per instance x T(mean prompt) (Arrow §5.3's T): seconds of prefill per second.
    Decode: by Little's law the arrivals keep rate x output x TPOT sequences decoding, each holding about
    prompt + output/2 tokens of context. At TPOT = SLO_TPOT one instance holds at most MT(SLO_TPOT)
    tokens (§5.3) and at most its KV cache, so the context over the smaller of the two is the share of
    one instance's decode capacity they need. The output length is ``output_tokens_mean``, else the
    mean of requests that finished in the window (a live router knows it only then; none finished: 0).
    """
    duration = w.duration_s if w.duration_s > 0 else 1.0
    out = w.finished_output_tokens_mean if output_tokens_mean is None else output_tokens_mean
    return offered_load_of(w.arrivals / duration / max(n, 1), w.arrival_input_tokens_mean, out, slo, profile,
                           kv_capacity_tokens)


def _pool_stats(w: MetricsWindow, role: Role) -> PoolStats:
    return {Role.PREFILL: w.prefill, Role.DECODE: w.decode, Role.MIXED: w.mixed}[role]


def pool_frame(state: ControlState, slo: SLO, config: ObservationConfig, seconds_since_flip: float,
               profile: InstanceProfile | None = None, output_tokens_mean: float | None = None) -> np.ndarray:
    """One frame (``len(pool_features(config))`` floats) from one ``ControlState``. Pure.

    ``profile`` (the instances' Arrow §5.2 profile) is required with ``load_features: capacity``;
    ``output_tokens_mean`` overrides the window's mean output length in ``offered_load``."""
    w = state.window
    views: Sequence[InstanceView] = state.instances
    n = max(len(views), 1)
    tok = config.token_scale
    by_role: dict[Role, list] = {Role.PREFILL: [], Role.DECODE: [], Role.MIXED: []}
    for s in w.instances:
        by_role[s.role].append(s)
    counts = {r: 0 for r in by_role}
    for v in views:
        counts[v.role] += 1
    values: list[float] = []
    for _tag, role in POOLS:
        members = by_role[role]
        k = len(members)
        ps = _pool_stats(w, role)
        values += [
            counts[role] / n,
            sum(s.prefill_load for s in members) / k if k else 0.0,
            sum(s.decode_load for s in members) / k if k else 0.0,
            _ratio(ps.ttft_p90, slo.ttft_s),
            _ratio(ps.tpot_p90, slo.tpot_s),
            sum(s.kv_usage for s in members) / k if k else 0.0,
            sum(s.busy_fraction for s in members) / k if k else 0.0,
            math.log1p(sum(s.waiting for s in members) / k) if k else 0.0,
        ]
    values += [
        *window_features(w, n, tok),
        math.log1p(w.pending_predicted_ttft_misses / n),
        sum(1 for v in views if half_flipped(v)) / n,
        flip_age(seconds_since_flip, config),
        1.0 / n,
    ]
    low, high = _LOW, _HIGH
    if config.load_features == "capacity":
        if profile is None:
            raise ValueError("observation.load_features 'capacity' needs the instances' profile (Arrow §5.2): "
                             "an emulated preset has one; start a live router with measured profiles "
                             "(arrow-rl live-profile)")
        kv = [v.kv_capacity_tokens for v in views if v.kv_capacity_tokens > 0]
        prefill, decode = offered_load(w, n, slo, profile, sum(kv) / len(kv) if kv else math.inf, output_tokens_mean)
        total = prefill + decode
        for i, value in zip(_RAW_RATE_INDEX, (prefill, decode, w.finished / w.arrivals if w.arrivals else 0.0)):
            values[i] = value
        values.append(prefill / total if total > 0 else 0.0)
        low, high = _CAPACITY_LOW, _CAPACITY_HIGH
    return finite_clipped(np.array(values, dtype=np.float32), low, high)


class PoolObservationBuilder:
    """``ObservationBuilder``'s interface for the size-free pool features: keeps a history of
    ``config.history`` frames (stack or delta, as ``envs.observation``) and the last role change;
    with ``memory``, the block of ``envs.memory_features`` follows the history.

    ``profile``: the instances' Arrow §5.2 profile, needed by ``load_features: capacity``; the env and
    a deployed checkpoint set it per cluster (``set_profile``), since an episode may draw another model."""

    def __init__(self, slo: SLO, num_instances: int, config: ObservationConfig | None = None,
                 min_pool_size: int = 1, profile: InstanceProfile | None = None) -> None:
        self.slo = slo
        self.config = config or ObservationConfig(kind="pools")
        self.num_instances = num_instances
        self.max_instances = self.config.max_instances or num_instances
        self.min_pool_size = min_pool_size
        self.profile = profile
        self._output_mean = 0.0   # the last window's mean output length where requests finished
        self._features = pool_features(self.config)
        low, high = _bounds(self._features)
        self._history = FrameHistory(low, high, self.config.history, self.config.history_mode)
        self._low, self._high = self._history.low, self._history.high
        # ``memory``: one block after the history (EWMAs are memory already: stacking them adds nothing)
        self._memory = ObservationMemory(slo, self.config) if self.config.memory else None
        if self._memory is not None:
            self._low = np.concatenate([self._low, self._memory.low])
            self._high = np.concatenate([self._high, self._memory.high])
        self.observation_space = spaces.Box(self._low, self._high, dtype=np.float32)

    @property
    def feature_names(self) -> list[str]:
        return self._history.names([f.name for f in self._features]) + [f.name for f in memory_features(self.config)]

    def set_profile(self, profile: InstanceProfile | None) -> None:
        """The profile ``load_features: capacity`` measures load against (the cluster's instances')."""
        self.profile = profile

    def reset(self) -> None:
        self._history.reset()
        self._output_mean = 0.0
        if self._memory is not None:
            self._memory.reset()

    def build(self, state: ControlState) -> np.ndarray:
        """Record ``state`` in the history and return the observation (a fresh array each call).

        The decode load carries the last known output length over windows where nothing finished
        (most 1 s windows of a long-output workload), so it does not read 0 between completions."""
        if state.window.finished > 0:
            self._output_mean = state.window.finished_output_tokens_mean
        since = self._history.seconds_since_flip(state)
        flat = self._history.push(pool_frame(state, self.slo, self.config, since, self.profile, self._output_mean))
        if self._memory is None:
            return flat
        return np.concatenate([flat, self._memory.update(state, since, self.profile)])
