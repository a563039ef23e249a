"""Observation memory (``observation.memory: true``, ``kind: pools`` only): longer-horizon and leading
signals appended once after the pool frame history.

Four one-second frames cannot tell a new burst from a steady load, nor see work that is queued but
has not yet made any latency slow. This block adds, for each time constant τ of
``observation.memory_time_constants_s``, exponentially weighted moving averages of the arrival rate,
the arriving prompt-token rate and the output-token rate, and the mean prompt, p90 prompt and mean
output lengths they imply; then the prompt-token backlog per prefill instance, the peak decode KV use,
flip churn and a long-horizon time since the last flip.

Everything is read from fields both backends fill (``MetricsWindow`` counts and means, the
instances' window KV use, ``InstanceView`` prompt tokens, roles and health), computed the same way on
the emulator and on ``LiveCluster``. Two limits follow from what a window carries:

- Output lengths are known only when a request finishes (a live router learns them then), so the
  output-token rate is that of *finished* requests: it lags arrivals by their decode time.
- A window carries the mean and p90 of its arrivals' prompt lengths, not the lengths. The long-horizon
  p90 is the arrival-weighted EWMA of the windows' p90s (an estimate, not the p90 of the pooled
  prompts); there is no p50 (the mean stands in for it).

EWMAs are bias-corrected: each is the weighted mean of the rates seen since ``reset`` with weights
exp(−age/τ), so the first window reads its own rate instead of a decay from an arbitrary start. The
state lives here and is cleared at ``reset``; the block is a deterministic function of the sequence of
``ControlState`` s since then. It depends only on ``arrow_rl.cluster.base`` / ``arrow_rl.control``, like
the rest of the observation, so a deployed checkpoint computes it on a live cluster.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Sequence

import numpy as np

from arrow_rl.cluster.base import SLO, InstanceView, MetricsWindow, Role
from arrow_rl.control import ControlState
from arrow_rl.perf.profile import InstanceProfile

from envs.config import ObservationConfig
from envs.observation import Feature, _log_tokens, finite_clipped
from envs.offered_load import offered_load_of

# the per-second amounts the EWMAs follow, in this order (rows of ``EwmaBank``)
_ARRIVALS, _PROMPT_TOKENS, _FINISHED, _OUTPUT_TOKENS, _PROMPT_P90_WEIGHTED = range(5)


def _tag(tau: float) -> str:
    return f"ewma{tau:g}s"


def _rate_features(tau: float, load_features: str) -> tuple[Feature, ...]:
    t = _tag(tau)
    if load_features == "capacity":
        rates = (
            Feature(f"offered_prefill_{t}", 0.0, 4.0, f"offered_prefill (arrivals/s per instance x T(mean prompt)) "
                    f"from the τ = {tau:g} s EWMAs of the rate and the mean prompt"),
            Feature(f"offered_decode_{t}", 0.0, 4.0, f"offered_decode (Little's law decode context / min(MT(SLO_TPOT), "
                    f"KV capacity)) from the τ = {tau:g} s EWMAs of the arrival rate and lengths"),
            Feature(f"served_decode_{t}", 0.0, 4.0, f"the same decode share for the τ = {tau:g} s EWMA of the "
                    "finished-request rate: the output-token rate in units of decode capacity"),
        )
    else:
        rates = (
            Feature(f"arrival_rate_{t}", 0.0, 12.0, f"log1p(τ = {tau:g} s EWMA of arrivals per second per instance)"),
            Feature(f"arrival_prompt_rate_{t}", 0.0, 12.0,
                    f"log1p(τ = {tau:g} s EWMA of arriving prompt tokens per second per instance / token_scale)"),
            Feature(f"output_token_rate_{t}", 0.0, 12.0,
                    f"log1p(τ = {tau:g} s EWMA of output tokens of finished requests per second per instance / "
                    "token_scale)"),
        )
    return rates + (
        Feature(f"prompt_mean_{t}", 0.0, 1.5,
                f"log1p(mean prompt tokens of arrivals, τ = {tau:g} s EWMA) / log1p(32768)"),
        Feature(f"prompt_p90_{t}", 0.0, 1.5,
                f"log1p(arrival-weighted τ = {tau:g} s EWMA of the windows' p90 prompt tokens) / log1p(32768)"),
        Feature(f"output_mean_{t}", 0.0, 1.5,
                f"log1p(mean output tokens of finished requests, τ = {tau:g} s EWMA) / log1p(32768)"),
    )


SIGNAL_FEATURES: tuple[Feature, ...] = (
    Feature("queued_prefill_tokens", 0.0, 12.0,
            "log1p(Σ prompt tokens not yet prefilled on all instances / (prefill + mixed instances · token_scale))"),
    Feature("decode_kv_usage_max", 0.0, 1.0,
            "max KV usage over decode instances (the mean is each frame's d_kv_usage)"),
    Feature("flips_in_flight", 0.0, 1.0,
            "instances not admitting work / instances: inside a flip delay (emulator); unhealthy (live)"),
    Feature("recent_flip_fraction", 0.0, 1.0,
            "instance role changes in the last flip_age_scale_s seconds / instances, saturating at 1"),
    Feature("time_since_flip_long", 0.0, 1.0,
            "seconds since the last role change / the longest memory time constant, saturating at 1"),
)


def memory_features(config: ObservationConfig) -> tuple[Feature, ...]:
    """The memory block's features under ``config`` (empty when ``memory`` is off)."""
    if not config.memory:
        return ()
    per_tau = tuple(f for tau in config.memory_time_constants_s for f in _rate_features(tau, config.load_features))
    return per_tau + SIGNAL_FEATURES


class EwmaBank:
    """Bias-corrected EWMAs of several per-second rates, each at several time constants.

    A window of ``dt`` seconds with amount ``a`` contributes the rate a/dt with weight
    exp(−age/τ)·(1 − exp(−dt/τ)); the estimate is the weighted mean, so an unchanging rate reads
    exactly that rate from the first window on, and a step change approaches the new rate as
    1 − exp(−elapsed/τ). Uneven window lengths are weighted by their duration."""

    def __init__(self, quantities: int, taus: Sequence[float]) -> None:
        self.taus = np.asarray(taus, dtype=np.float64)
        self.quantities = quantities
        self.reset()

    def reset(self) -> None:
        self._sums = np.zeros((self.quantities, len(self.taus)))
        self._weight = np.zeros(len(self.taus))

    def update(self, amounts: Sequence[float], dt: float) -> None:
        """Add a window of ``dt`` seconds in which each quantity grew by ``amounts`` (≥ 0; a
        non-finite amount, a backend's empty-window NaN, counts as 0). ``dt`` ≤ 0 changes nothing."""
        if not dt > 0:
            return
        a = np.nan_to_num(np.asarray(amounts, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        # math.exp, not np.exp: numpy's SIMD exp may differ by an ulp between CPUs, and the
        # observation is pinned bit for bit
        keep = np.array([math.exp(-dt / tau) for tau in self.taus])
        self._sums = keep * self._sums + (1.0 - keep) * (np.maximum(a, 0.0)[:, None] / dt)
        self._weight = keep * self._weight + (1.0 - keep)

    def rates(self) -> np.ndarray:
        """(quantities, taus) per-second rates; 0 before the first window."""
        w = self._weight
        return np.divide(self._sums, w, out=np.zeros_like(self._sums), where=w > 0)


def _div(x: float, y: float) -> float:
    return x / y if y > 0 else 0.0


class ObservationMemory:
    """The memory block's state (EWMAs, the last roles, recent role changes) and its features."""

    def __init__(self, slo: SLO, config: ObservationConfig) -> None:
        self.slo, self.config = slo, config
        self.features = memory_features(config)
        self.low = np.array([f.low for f in self.features], dtype=np.float32)
        self.high = np.array([f.high for f in self.features], dtype=np.float32)
        self._ewma = EwmaBank(5, config.memory_time_constants_s)
        self.reset()

    def reset(self) -> None:
        self._ewma.reset()
        self._roles: tuple[Role, ...] | None = None
        self._changes: deque[tuple[float, int]] = deque()   # (window start, instances relabelled)

    def _note_role_changes(self, state: ControlState) -> int:
        """Record ``state``'s relabels; return those in the last ``flip_age_scale_s`` seconds."""
        roles = tuple(v.role for v in state.instances)
        if self._roles is not None:
            changed = sum(1 for a, b in zip(roles, self._roles) if a is not b)
            if changed:   # dated at the window start, as FrameHistory dates the last flip
                self._changes.append((state.window.start_s, changed))
        self._roles = roles
        horizon = state.now - self.config.flip_age_scale_s
        while self._changes and self._changes[0][0] < horizon:
            self._changes.popleft()
        return sum(k for _t, k in self._changes)

    def update(self, state: ControlState, seconds_since_flip: float,
               profile: InstanceProfile | None = None) -> np.ndarray:
        """Add ``state``'s window to the memory; return the block (a fresh, clipped float32 array).

        ``profile`` (the instances' Arrow §5.2 profile) is needed with ``load_features: capacity``."""
        w: MetricsWindow = state.window
        views: Sequence[InstanceView] = state.instances
        n = max(len(views), 1)
        self._ewma.update([w.arrivals, w.arrivals * w.arrival_input_tokens_mean, w.finished,
                           w.finished * w.finished_output_tokens_mean, w.arrivals * w.arrival_input_tokens_p90],
                          w.duration_s)
        rates = self._ewma.rates()
        tok = self.config.token_scale
        capacity = self.config.load_features == "capacity"
        if capacity and profile is None:
            raise ValueError("observation.memory with load_features 'capacity' needs the instances' profile")
        kv = [v.kv_capacity_tokens for v in views if v.kv_capacity_tokens > 0]
        kv_capacity = sum(kv) / len(kv) if kv else math.inf
        values: list[float] = []
        for j in range(len(self._ewma.taus)):
            arrivals, prompt_tok, finished, output_tok, p90_weighted = rates[:, j]
            prompt, output = _div(prompt_tok, arrivals), _div(output_tok, finished)
            if capacity:
                assert profile is not None
                offered_p, offered_d = offered_load_of(arrivals / n, prompt, output, self.slo, profile, kv_capacity)
                _, served_d = offered_load_of(finished / n, prompt, output, self.slo, profile, kv_capacity)
                values += [offered_p, offered_d, served_d]
            else:
                values += [math.log1p(arrivals / n), math.log1p(prompt_tok / n / tok), math.log1p(output_tok / n / tok)]
            values += [_log_tokens(prompt), _log_tokens(_div(p90_weighted, arrivals)), _log_tokens(output)]
        takes_prompts = sum(1 for v in views if v.role is not Role.DECODE)
        decode_kv = [s.kv_usage for s in w.instances if s.role is Role.DECODE]
        recent = self._note_role_changes(state)
        values += [
            math.log1p(sum(v.prefill_tokens for v in views) / (max(takes_prompts, 1) * tok)),
            max(decode_kv, default=0.0),
            sum(1 for v in views if not v.healthy) / n,
            min(recent / n, 1.0),
            min(max(seconds_since_flip, 0.0) / max(self.config.memory_time_constants_s), 1.0),
        ]
        return finite_clipped(np.array(values, dtype=np.float32), self.low, self.high)
