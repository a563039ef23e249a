"""The size-free observation (issue 12, ``ObservationConfig.kind = "pools"``): a fixed-length vector
whatever the cluster size, built from per-role pool statistics relative to the SLOs.

Per pool (PREFILL, DECODE, MIXED): its fraction of the cluster, its queued prefill work as the mean
instance Σ T(rp) / SLO_TTFT (Arrow §5.5's prefill load), its mean decode load (token latency /
SLO_TPOT, §5.5), its p90 TTFT / SLO_TTFT and p90 TPOT / SLO_TPOT over the window, mean KV use, mean
busy fraction, and queued requests per instance. An empty pool reads all zeros beside its fraction 0.
Cluster level: arrivals and arriving prompt tokens per second per instance, the prompt/output mix,
finished requests per instance, the window's miss fraction and TTFT/TPOT violation shares, queued
requests already predicted to miss TTFT per instance, half-flipped instances, time since the last role
change, and 1/N (how coarse one move is). Nothing grows with N, so one policy runs on 4 to 32 instances.

The same builder runs inside ``PDClusterEnv`` and inside a deployed checkpoint (``agents.controller``),
so it depends only on ``arrow_rl.cluster.base`` / ``arrow_rl.control``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from gymnasium import spaces

from arrow_rl.cluster.base import SLO, InstanceView, MetricsWindow, PoolStats, Role
from arrow_rl.control import ControlState

from envs.config import ObservationConfig
from envs.observation import Feature, FrameHistory, _log_tokens, _ratio

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
    Feature("arrival_rate", 0.0, 12.0, "log1p(arrivals per second per instance)"),
    Feature("arrival_prompt_rate", 0.0, 12.0, "log1p(arriving prompt tokens per second per instance / token_scale)"),
    Feature("arrival_input_mean", 0.0, 1.5, "log1p(mean input tokens of arrivals) / log1p(32768)"),
    Feature("arrival_input_p90", 0.0, 1.5, "log1p(p90 input tokens of arrivals) / log1p(32768)"),
    Feature("finished_output_mean", 0.0, 1.5, "log1p(mean output tokens of requests finished in the window) / log1p(32768)"),
    Feature("finished_rate", 0.0, 12.0, "log1p(requests finished per second per instance)"),
    Feature("window_miss_fraction", 0.0, 1.0, "(finished − finished within SLO + rejected) / (finished + rejected): recent attainment"),
    Feature("ttft_violation_fraction", 0.0, 1.0, "TTFT violations / finished requests in the window"),
    Feature("tpot_violation_fraction", 0.0, 1.0, "TPOT violations / finished requests in the window"),
    Feature("pending_ttft_misses", 0.0, 12.0, "log1p(queued requests predicted to miss TTFT / instances)"),
    Feature("half_flipped_fraction", 0.0, 1.0, "instances still holding work of a role they left (§5.5) / instances"),
    Feature("time_since_flip", 0.0, 1.0, "seconds since the last role change / flip_age_scale_s, saturating at 1"),
    Feature("inverse_size", 0.0, 1.0, "1 / instances: how large one instance is in the fractions above"),
)
POOL_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in POOL_OBSERVATION_FEATURES)
_LOW = np.array([f.low for f in POOL_OBSERVATION_FEATURES], dtype=np.float32)
_HIGH = np.array([f.high for f in POOL_OBSERVATION_FEATURES], dtype=np.float32)


def _pool_stats(w: MetricsWindow, role: Role) -> PoolStats:
    return {Role.PREFILL: w.prefill, Role.DECODE: w.decode, Role.MIXED: w.mixed}[role]


def _half_flipped(v: InstanceView) -> bool:
    if v.role is Role.PREFILL:
        return v.num_decode > 0
    if v.role is Role.DECODE:
        return v.num_prefill > 0
    return False   # a MIXED instance serves both phases of its own requests


def pool_frame(state: ControlState, slo: SLO, config: ObservationConfig, seconds_since_flip: float) -> np.ndarray:
    """One frame (``len(POOL_OBSERVATION_FEATURES)`` floats) from one ``ControlState``. Pure."""
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
    duration = w.duration_s if w.duration_s > 0 else 1.0
    ended = w.finished + w.rejected
    finished = max(w.finished, 1)
    values += [
        math.log1p(w.arrivals / duration / n),
        math.log1p(w.arrivals * w.arrival_input_tokens_mean / duration / n / tok),
        _log_tokens(w.arrival_input_tokens_mean),
        _log_tokens(w.arrival_input_tokens_p90),
        _log_tokens(w.arrival_output_tokens_mean),
        math.log1p(w.finished / duration / n),
        (ended - w.finished_within_slo) / ended if ended else 0.0,
        w.ttft_violations / finished,
        w.tpot_violations / finished,
        math.log1p(w.pending_predicted_ttft_misses / n),
        sum(1 for v in views if _half_flipped(v)) / n,
        min(max(seconds_since_flip, 0.0) / config.flip_age_scale_s, 1.0),
        1.0 / n,
    ]
    vec = np.array(values, dtype=np.float32)
    if not np.isfinite(vec).all():   # a backend may report NaN/inf for empty windows
        np.nan_to_num(vec, copy=False, nan=0.0, posinf=float(_HIGH.max()), neginf=0.0)
    return np.clip(vec, _LOW, _HIGH, out=vec)


class PoolObservationBuilder:
    """``ObservationBuilder``'s interface for the size-free pool features: keeps a history of
    ``config.history`` frames (stack or delta, as ``envs.observation``) and the last role change."""

    def __init__(self, slo: SLO, num_instances: int, config: ObservationConfig | None = None,
                 min_pool_size: int = 1) -> None:
        self.slo = slo
        self.config = config or ObservationConfig(kind="pools")
        self.num_instances = num_instances
        self.max_instances = self.config.max_instances or num_instances
        self.min_pool_size = min_pool_size
        self._history = FrameHistory(_LOW, _HIGH, self.config.history, self.config.history_mode)
        self._low, self._high = self._history.low, self._history.high
        self.observation_space = spaces.Box(self._low, self._high, dtype=np.float32)

    @property
    def feature_names(self) -> list[str]:
        return self._history.names(POOL_FEATURE_NAMES)

    def reset(self) -> None:
        self._history.reset()

    def build(self, state: ControlState) -> np.ndarray:
        """Record ``state`` in the history and return the observation (a fresh array each call)."""
        return self._history.push(pool_frame(state, self.slo, self.config, self._history.seconds_since_flip(state)))
