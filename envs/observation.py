"""Observation encoding: ``ControlState`` → float32 vector (or Dict), normalised and clipped.

The same builder turns a ``ControlState`` into a policy input inside ``PDClusterEnv`` *and* inside
a deployed checkpoint controller (``agents``), so it depends only on ``arrow_rl.cluster.base`` /
``arrow_rl.control`` and numpy, never on the emulator.

Why these normalisations: one policy should work across cluster sizes and SLOs, so latencies are
divided by their SLO, Arrow §5.5 loads are already SLO-relative, counts are per instance of the
pool that holds them, and heavy-tailed quantities (queues, rates, token counts) go through
``log1p`` so a 100x burst stays inside a bounded, still-informative range. Every feature is clipped
to the bounds listed in ``OBSERVATION_FEATURES`` (the Box space's low/high).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from gymnasium import spaces

from arrow_rl.cluster.base import SLO, InstanceView, MetricsWindow, Role
from arrow_rl.control import ControlState

from envs.config import ObservationConfig

_LOG_TOKENS_REF = math.log1p(32768.0)  # log-token features reach 1.0 at a 32k-token prompt


@dataclass(frozen=True)
class Feature:
    name: str
    low: float
    high: float
    doc: str


# The window's arrivals and outcomes, the same in both encodings (``window_features`` computes them).
WINDOW_FEATURES: tuple[Feature, ...] = (
    Feature("arrival_rate", 0.0, 12.0, "log1p(arrivals per second per instance)"),
    Feature("arrival_prompt_rate", 0.0, 12.0, "log1p(arriving prompt tokens per second per instance / token_scale)"),
    Feature("arrival_input_mean", 0.0, 1.5, "log1p(mean input tokens of arrivals) / log1p(32768)"),
    Feature("arrival_input_p90", 0.0, 1.5, "log1p(p90 input tokens of arrivals) / log1p(32768)"),
    Feature("finished_output_mean", 0.0, 1.5, "log1p(mean output tokens of requests finished in the window) / log1p(32768)"),
    Feature("finished_rate", 0.0, 12.0, "log1p(requests finished per second per instance)"),
    Feature("window_miss_fraction", 0.0, 1.0,
            "(finished − finished within SLO + rejected) / (finished + rejected): recent attainment"),
    Feature("ttft_violation_fraction", 0.0, 1.0, "TTFT violations / finished requests in the window"),
    Feature("tpot_violation_fraction", 0.0, 1.0, "TPOT violations / finished requests in the window"),
)

OBSERVATION_FEATURES: tuple[Feature, ...] = (
    # -- latency relative to the SLOs
    Feature("prefill_ttft_mean_slo", 0.0, 10.0, "mean TTFT of first tokens emitted in the window / SLO_TTFT"),
    Feature("prefill_ttft_p90_slo", 0.0, 10.0, "p90 TTFT of first tokens emitted in the window / SLO_TTFT"),
    Feature("decode_itl_mean_slo", 0.0, 10.0, "mean inter-token gap of the decode pool in the window / SLO_TPOT"),
    Feature("decode_tpot_mean_slo", 0.0, 10.0, "mean TPOT of requests finished in the window / SLO_TPOT"),
    Feature("decode_tpot_p90_slo", 0.0, 10.0, "p90 TPOT of requests finished in the window / SLO_TPOT"),
    # -- Arrow §5.5 SLO-relative loads (1.0 = exactly at the SLO)
    Feature("prefill_load", 0.0, 10.0, "Arrow §5.5 LP: mean over prefill instances of Σ T(rp,i) / SLO_TTFT"),
    Feature("decode_load", 0.0, 10.0, "Arrow §5.5 LD: mean over decode instances of mean token latency / SLO_TPOT"),
    Feature("prefill_load_max", 0.0, 10.0, "max instance prefill load over prefill-role instances"),
    Feature("decode_load_max", 0.0, 10.0, "max instance decode load over decode-role instances"),
    # -- queues and resident work (per instance of the pool, log1p)
    Feature("prefill_waiting", 0.0, 12.0, "log1p(requests queued at prefill instances / prefill instances)"),
    Feature("decode_waiting", 0.0, 12.0, "log1p(requests queued at decode instances / decode instances)"),
    Feature("prefill_running", 0.0, 12.0, "log1p(requests in running batches of prefill instances / prefill instances)"),
    Feature("decode_running", 0.0, 12.0, "log1p(requests in running batches of decode instances / decode instances)"),
    Feature("queued_prefill_work", 0.0, 12.0,
            "log1p(queued prompt tokens of the prefill pool / (prefill instances · token_scale)): iterations of backlog"),
    Feature("resident_prefill_work", 0.0, 12.0,
            "log1p(Σ prompt tokens still to prefill on all instances / (instances · token_scale))"),
    Feature("resident_decode_tokens", 0.0, 2.0, "Σ decode context tokens on all instances / Σ KV capacity"),
    Feature("pending_ttft_misses", 0.0, 12.0, "log1p(queued requests predicted to miss TTFT / instances)"),
    # -- memory and utilisation
    Feature("prefill_kv_usage", 0.0, 1.0, "mean KV usage of prefill instances"),
    Feature("decode_kv_usage", 0.0, 1.0, "mean KV usage of decode instances"),
    Feature("kv_usage_max", 0.0, 1.0, "max KV usage over all instances"),
    Feature("prefill_busy", 0.0, 1.0, "mean busy fraction of prefill instances in the window"),
    Feature("decode_busy", 0.0, 1.0, "mean busy fraction of decode instances in the window"),
    # -- recent arrivals and outcomes in the window
    *WINDOW_FEATURES,
    # -- split and flips
    Feature("prefill_fraction", 0.0, 1.0, "prefill-role instances / instances"),
    Feature("can_move_to_decode", 0.0, 1.0, "1 if the prefill pool can give up an instance (Alg. 3 guard)"),
    Feature("can_move_to_prefill", 0.0, 1.0, "1 if the decode pool can give up an instance (Alg. 3 guard)"),
    Feature("half_flipped_fraction", 0.0, 1.0,
            "instances still holding work of the phase they were flipped away from (Arrow §5.5) / instances"),
    Feature("time_since_flip", 0.0, 1.0, "seconds since the last role change / flip_age_scale_s, saturating at 1"),
    Feature("cluster_size", 0.0, 1.0, "instances / max_instances"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in OBSERVATION_FEATURES)
_LOW = np.array([f.low for f in OBSERVATION_FEATURES], dtype=np.float32)
_HIGH = np.array([f.high for f in OBSERVATION_FEATURES], dtype=np.float32)
# optional (ObservationConfig.prefix_cache), appended after OBSERVATION_FEATURES
PREFIX_CACHE_FEATURE = Feature("prefix_cache_hit_rate", 0.0, 1.0,
                               "prompt tokens found in the instances' prefix caches / looked up, in the window")


def frame_feature_list(config: ObservationConfig) -> tuple[Feature, ...]:
    """The features of one frame under ``config``."""
    return OBSERVATION_FEATURES + ((PREFIX_CACHE_FEATURE,) if config.prefix_cache else ())

INSTANCE_FEATURES: tuple[Feature, ...] = (
    Feature("present", 0.0, 1.0, "1 for a real instance, 0 for padding"),
    Feature("is_prefill", 0.0, 1.0, "1 if the instance is labelled prefill"),
    Feature("prefill_load", 0.0, 10.0, "Arrow §5.5 instance prefill load Σ T(rp,i) / SLO_TTFT"),
    Feature("decode_load", 0.0, 10.0, "Arrow §5.5 instance decode load (mean token latency / SLO_TPOT)"),
    Feature("ttft_mean_slo", 0.0, 10.0, "mean TTFT of first tokens it emitted in the window / SLO_TTFT"),
    Feature("itl_mean_slo", 0.0, 10.0, "mean inter-token gap in the window / SLO_TPOT"),
    Feature("kv_usage", 0.0, 1.0, "KV usage"),
    Feature("busy", 0.0, 1.0, "busy fraction in the window"),
    Feature("waiting", 0.0, 12.0, "log1p(queued requests)"),
    Feature("running", 0.0, 12.0, "log1p(requests in the running batch)"),
    Feature("resident_prefill", 0.0, 12.0, "log1p(resident requests with prompt tokens left)"),
    Feature("resident_prefill_work", 0.0, 12.0, "log1p(prompt tokens left / token_scale)"),
    Feature("resident_decode", 0.0, 12.0, "log1p(resident requests in the decode phase)"),
    Feature("resident_decode_tokens", 0.0, 2.0, "decode context tokens / KV capacity"),
)
INSTANCE_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in INSTANCE_FEATURES)
_ILOW = np.array([f.low for f in INSTANCE_FEATURES], dtype=np.float32)
_IHIGH = np.array([f.high for f in INSTANCE_FEATURES], dtype=np.float32)


def _ratio(x: float, ref: float) -> float:
    return x / ref if ref > 0 and math.isfinite(x) else 0.0


def _log_tokens(x: float) -> float:
    return math.log1p(max(x, 0.0)) / _LOG_TOKENS_REF


def window_features(w: MetricsWindow, n: int, token_scale: float) -> list[float]:
    """``WINDOW_FEATURES`` of window ``w`` on a cluster of ``n`` instances (rates per instance)."""
    duration = w.duration_s if w.duration_s > 0 else 1.0
    ended = w.finished + w.rejected
    finished = max(w.finished, 1)
    return [
        math.log1p(w.arrivals / duration / n),
        math.log1p(w.arrivals * w.arrival_input_tokens_mean / duration / n / token_scale),
        _log_tokens(w.arrival_input_tokens_mean),
        _log_tokens(w.arrival_input_tokens_p90),
        _log_tokens(w.finished_output_tokens_mean),
        math.log1p(w.finished / duration / n),
        (ended - w.finished_within_slo) / ended if ended else 0.0,
        w.ttft_violations / finished,
        w.tpot_violations / finished,
    ]


def flip_age(seconds_since_flip: float, config: ObservationConfig) -> float:
    """Seconds since the last role change / ``flip_age_scale_s``, saturating at 1."""
    return min(max(seconds_since_flip, 0.0) / config.flip_age_scale_s, 1.0)


def half_flipped(v: InstanceView) -> bool:
    """Whether ``v`` still holds work of the phase it was flipped away from (Arrow §5.5)."""
    if v.role is Role.PREFILL:
        return v.num_decode > 0
    if v.role is Role.DECODE:
        return v.num_prefill > 0
    return False   # a MIXED instance serves both phases of its own requests


def finite_clipped(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``values`` clipped to [low, high] in place, NaN read as 0 and ±inf as the bounds' extremes (a
    backend may report NaN/inf for empty windows)."""
    if not np.isfinite(values).all():
        np.nan_to_num(values, copy=False, nan=0.0, posinf=float(high.max()), neginf=0.0)
    return np.clip(values, low, high, out=values)


def _pool_maxima_and_busy(w: MetricsWindow) -> tuple[float, float, float, float]:
    """(max prefill load over prefill instances, max decode load over decode instances, summed busy
    fractions of the prefill instances, of the decode instances) in window ``w``."""
    p_load_max = d_load_max = 0.0
    p_busy = d_busy = 0.0
    for s in w.instances:
        if s.role is Role.PREFILL:
            p_load_max = max(p_load_max, s.prefill_load)
            p_busy += s.busy_fraction
        else:
            d_load_max = max(d_load_max, s.decode_load)
            d_busy += s.busy_fraction
    return p_load_max, d_load_max, p_busy, d_busy


def frame_features(state: ControlState, slo: SLO, config: ObservationConfig, num_instances: int,
                   max_instances: int, seconds_since_flip: float, min_pool_size: int = 1) -> np.ndarray:
    """One frame (``len(OBSERVATION_FEATURES)`` floats) from one ``ControlState``. Pure."""
    w: MetricsWindow = state.window
    views: Sequence[InstanceView] = state.instances
    n = max(len(views), 1)
    n_p = sum(1 for v in views if v.role is Role.PREFILL)
    n_d = len(views) - n_p
    if any(v.role is Role.MIXED for v in views):
        raise ValueError("the observation knows PREFILL and DECODE instances only; this cluster has MIXED "
                         "ones (use observation.kind: pools, which sees all three roles)")
    tok = config.token_scale
    p, d = w.prefill, w.decode
    p_load_max, d_load_max, p_busy, d_busy = _pool_maxima_and_busy(w)
    resident_prefill_tokens = sum(v.prefill_tokens for v in views)
    decode_tokens = sum(v.decode_tokens for v in views)
    kv_capacity = sum(v.kv_capacity_tokens for v in views)
    kv_max = max([0.0, *(v.kv_usage for v in views)])   # max(0.0, NaN) is 0.0
    vec = np.array([
        _ratio(p.ttft_mean, slo.ttft_s),
        _ratio(p.ttft_p90, slo.ttft_s),
        _ratio(d.itl_mean, slo.tpot_s),
        _ratio(d.tpot_mean, slo.tpot_s),
        _ratio(d.tpot_p90, slo.tpot_s),
        p.load,
        d.load,
        p_load_max,
        d_load_max,
        math.log1p(p.waiting / max(n_p, 1)),
        math.log1p(d.waiting / max(n_d, 1)),
        math.log1p(p.running / max(n_p, 1)),
        math.log1p(d.running / max(n_d, 1)),
        math.log1p(p.queued_prefill_tokens / (max(n_p, 1) * tok)),
        math.log1p(resident_prefill_tokens / (n * tok)),
        _ratio(decode_tokens, kv_capacity),
        math.log1p(w.pending_predicted_ttft_misses / n),
        p.kv_usage_mean,
        d.kv_usage_mean,
        kv_max,
        p_busy / n_p if n_p else 0.0,
        d_busy / n_d if n_d else 0.0,
        *window_features(w, n, tok),
        n_p / n,
        1.0 if n_p > min_pool_size else 0.0,
        1.0 if n_d > min_pool_size else 0.0,
        sum(1 for v in views if half_flipped(v)) / n,
        flip_age(seconds_since_flip, config),
        num_instances / max_instances,
    ], dtype=np.float32)
    if config.prefix_cache:
        return finite_clipped(np.append(vec, np.float32(w.prefix_cache_hit_rate)), _LOW_PC, _HIGH_PC)
    return finite_clipped(vec, _LOW, _HIGH)


_LOW_PC = np.append(_LOW, np.float32(PREFIX_CACHE_FEATURE.low))
_HIGH_PC = np.append(_HIGH, np.float32(PREFIX_CACHE_FEATURE.high))


def instance_features(state: ControlState, slo: SLO, config: ObservationConfig, max_instances: int) -> np.ndarray:
    """Per-instance rows, padded with zeros to ``max_instances`` (``present`` = 0 marks padding)."""
    out = np.zeros((max_instances, len(INSTANCE_FEATURES)), dtype=np.float32)
    stats = {s.instance_id: s for s in state.window.instances}
    tok = config.token_scale
    for row, v in enumerate(state.instances[:max_instances]):
        s = stats.get(v.instance_id)
        out[row] = (
            1.0,
            1.0 if v.role is Role.PREFILL else 0.0,
            s.prefill_load if s else 0.0,
            s.decode_load if s else 0.0,
            _ratio(s.ttft_mean, slo.ttft_s) if s else 0.0,
            _ratio(s.itl_mean, slo.tpot_s) if s else 0.0,
            v.kv_usage,
            s.busy_fraction if s else 0.0,
            math.log1p(s.waiting) if s else 0.0,
            math.log1p(s.running) if s else 0.0,
            math.log1p(v.num_prefill),
            math.log1p(v.prefill_tokens / tok),
            math.log1p(v.num_decode),
            _ratio(v.decode_tokens, v.kv_capacity_tokens),
        )
    return finite_clipped(out, _ILOW, _IHIGH)


class FrameHistory:
    """The last ``history`` frames and the last role change, shared by both observation builders.

    ``mode="stack"``: [frame_t, frame_{t-1}, …, frame_{t-k+1}] (the oldest frames repeat the first
    one until k frames exist). ``"delta"``: [frame_t, frame_t − frame_{t-1}, …]. Role changes are
    noticed by comparing consecutive instance roles, so no hook into whoever flipped is needed.
    """

    def __init__(self, frame_low: np.ndarray, frame_high: np.ndarray, history: int, mode: str) -> None:
        self.history, self.mode = history, mode
        if mode == "stack":
            low, high = np.tile(frame_low, history), np.tile(frame_high, history)
        else:
            span = frame_high - frame_low
            low = np.concatenate([frame_low] + [-span] * (history - 1))
            high = np.concatenate([frame_high] + [span] * (history - 1))
        self.low, self.high = low.astype(np.float32), high.astype(np.float32)
        self.reset()

    def names(self, frame_names: Sequence[str]) -> list[str]:
        """Names of the flat vector's entries, e.g. ``decode_load@t-1`` or ``decode_load@d1``."""
        tag = "t-" if self.mode == "stack" else "d"
        names = list(frame_names)
        for lag in range(1, self.history):
            names += [f"{f}@{tag}{lag}" for f in frame_names]
        return names

    def reset(self) -> None:
        self._frames: deque[np.ndarray] = deque(maxlen=self.history)
        self._roles: tuple[Role, ...] | None = None
        self._last_flip_s: float | None = None
        self._start_s: float | None = None

    def seconds_since_flip(self, state: ControlState) -> float:
        """Note ``state``'s roles and return the seconds since the last role change (or the start)."""
        roles = tuple(v.role for v in state.instances)
        if self._start_s is None:
            self._start_s = state.window.start_s
        if self._roles is not None and roles != self._roles:
            # A controller's flips take effect at the window's start; a router's (Arrow Alg. 1
            # step 4) somewhere inside it. The window start is exact for the first, close for the second.
            self._last_flip_s = state.window.start_s
        self._roles = roles
        return state.now - (self._last_flip_s if self._last_flip_s is not None else self._start_s)

    def push(self, frame: np.ndarray) -> np.ndarray:
        """Add the newest frame; return the flat, clipped observation (a fresh array each call)."""
        if not self._frames:
            self._frames.extend([frame] * self.history)
        else:
            self._frames.appendleft(frame)
        if self.mode == "stack":
            flat = np.concatenate(self._frames)
        else:
            fr = list(self._frames)
            flat = np.concatenate([fr[0]] + [fr[i] - fr[i + 1] for i in range(len(fr) - 1)])
        return np.clip(flat, self.low, self.high, out=flat).astype(np.float32, copy=False)


class ObservationBuilder:
    """Stateful wrapper around ``frame_features``: keeps the frame history and the last role change.

    The observation is a pure function of (the sequence of ``ControlState``s since ``reset``, the
    SLO, the config): the builder notices role changes itself by comparing consecutive instance
    roles, so it needs no hook into whoever flipped (env action, Arrow's router, an operator).

    ``history_mode``: stack or delta frames, as ``FrameHistory`` describes.
    """

    def __init__(self, slo: SLO, num_instances: int, config: ObservationConfig | None = None,
                 min_pool_size: int = 1) -> None:
        self.slo = slo
        self.config = config or ObservationConfig()
        self.num_instances = num_instances
        self.max_instances = self.config.max_instances or num_instances
        if self.max_instances < num_instances:
            raise ValueError(f"observation.max_instances={self.max_instances} < num_instances={num_instances}")
        self.min_pool_size = min_pool_size
        f_low, f_high = (_LOW_PC, _HIGH_PC) if self.config.prefix_cache else (_LOW, _HIGH)
        self._history = FrameHistory(f_low, f_high, self.config.history, self.config.history_mode)
        self._low, self._high = self._history.low, self._history.high
        flat = spaces.Box(self._low, self._high, dtype=np.float32)
        if self.config.per_instance:
            self.observation_space: spaces.Space = spaces.Dict({
                "features": flat,
                "instances": spaces.Box(np.tile(_ILOW, (self.max_instances, 1)),
                                        np.tile(_IHIGH, (self.max_instances, 1)), dtype=np.float32),
            })
        else:
            self.observation_space = flat

    @property
    def feature_names(self) -> list[str]:
        """Names of the flat vector's entries, e.g. ``decode_load@t-1`` or ``decode_load@d1``."""
        return self._history.names([f.name for f in frame_feature_list(self.config)])

    def reset(self) -> None:
        self._history.reset()

    def build(self, state: ControlState) -> np.ndarray | dict[str, np.ndarray]:
        """Record ``state`` in the history and return the observation (a fresh array each call)."""
        since = self._history.seconds_since_flip(state)
        frame = frame_features(state, self.slo, self.config, self.num_instances, self.max_instances,
                               since, self.min_pool_size)
        flat = self._history.push(frame)
        if self.config.per_instance:
            return {"features": flat, "instances": instance_features(state, self.slo, self.config, self.max_instances)}
        return flat
