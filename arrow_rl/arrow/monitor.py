"""Arrow's instance scheduling (§5.5): the monitor (Algorithm 2) in its two controller forms.

- ``ArrowMonitor``: Algorithm 2 as a ``Controller`` (every update interval, SLO-relative pool
  loads, sustained trigger, P→D only, cooldown). Together with ``ArrowRouter(enable_flips=True)``
  (which performs Algorithm 1's per-request flips) this is the faithful event-driven Arrow.
- ``ArrowIntervalController``: Algorithm 2 + 3 plus an interval-level version of Algorithm 1's
  flips, acting only once per control interval from the ``ControlState``. This is the seat a
  learned agent takes; it pairs with ``ArrowRouter(enable_flips=False)``.
"""

from __future__ import annotations

import math
from typing import Sequence

from arrow_rl.arrow.config import ArrowConfig, ArrowState
from arrow_rl.arrow.flip_selection import ProfileSource, profile_of, resident_prefill_time, select_flip_instance
from arrow_rl.cluster.base import ClusterInfo, Flip, InstanceView, Role
from arrow_rl.control import ControlState
from arrow_rl.perf.profile import InstanceProfile


def default_profiles(info: ClusterInfo) -> ProfileSource:
    """Profiles a controller may use as fixed configuration: ``info.extra['profiles']`` when the
    cluster provides them, else the preset's profile (Arrow §5.2: profiled once at start)."""
    profiles = info.extra.get("profiles") if info.extra else None
    if profiles is not None:
        return profiles
    try:
        from arrow_rl.perf.presets import get_preset
        from arrow_rl.perf.profile import profile_instance  # type: ignore[attr-defined]

        return profile_instance(get_preset(info.preset))
    except Exception:  # noqa: BLE001 - profiles are an optimisation of Alg. 3's ordering only
        return None


def with_role(views: Sequence[InstanceView], instance_id: int, role: Role) -> list[InstanceView]:
    """Views after relabelling one instance (to chain several Alg. 3 choices in one interval)."""
    from dataclasses import replace

    return [replace(v, role=role) if v.instance_id == instance_id else v for v in views]


class ArrowMonitor:
    """Arrow Algorithm 2, the monitoring loop (§5.5), as a ``Controller``.

    Every ``update_interval_s`` it reads the window's SLO-relative pool loads LP and LD (§5.5) and
    flips one prefill instance to decode when ``LD ≥ L_EXPAND`` or ``LP ≤ L_SHRINK ≤ LD`` has held
    for ``sustain_count`` consecutive passes and the P→D cooldown has elapsed. It never flips D→P:
    that happens only inside Algorithm 1 (the router) in the event-driven Arrow.
    """

    name = "arrow-monitor"

    def __init__(self, config: ArrowConfig | None = None, state: ArrowState | None = None,
                 profiles: ProfileSource = None) -> None:
        self.config = config or ArrowConfig()
        self.state = state if state is not None else ArrowState()
        self._fixed_profiles = profiles
        self.profiles: ProfileSource = profiles
        self._sustained = 0
        self._last_pass_s = -math.inf
        self.info: ClusterInfo | None = None
        self._proposal: tuple[float, int, int] | None = None  # state before act(): see sync_applied

    def reset(self, info: ClusterInfo) -> None:
        self.info = info
        self.state.reset()
        self.profiles = self._fixed_profiles if self._fixed_profiles is not None else default_profiles(info)
        self._sustained = 0
        self._last_pass_s = -math.inf
        self._proposal = None

    # -- Algorithm 2 --------------------------------------------------------------------------
    def trigger(self, lp: float, ld: float) -> bool:
        """Arrow Alg. 2 trigger: (LD ≥ L_EXPAND) or (LP ≤ L_SHRINK ≤ LD)."""
        c = self.config
        return ld >= c.l_expand or (lp <= c.l_shrink <= ld)

    def monitoring_pass(self, state: ControlState, views: Sequence[InstanceView]) -> list[Flip]:
        """One Alg. 2 pass if an update interval has elapsed, else nothing."""
        now = state.now
        if now - self._last_pass_s < self.config.update_interval_s - 1e-9:
            return []
        self._last_pass_s = now
        lp, ld = float(state.window.prefill.load), float(state.window.decode.load)
        self.state.prefill_load, self.state.decode_load = lp, ld
        self._sustained = self._sustained + 1 if self.trigger(lp, ld) else 0
        self._note_sustained()
        if self._sustained < self.config.sustain_count:  # "held over a period of time" (§5.5)
            return []
        return self.flip_to_decode(now, views, source="alg2")

    def flip_to_decode(self, now: float, views: Sequence[InstanceView], source: str) -> list[Flip]:
        """Alg. 3 towards DECODE, gated by the P→D cooldown (§5.5: P→D only)."""
        if not self.state.p2d_allowed(now, self.config.cooldown_s):
            return []
        target = select_flip_instance(views, Role.DECODE, self.profiles, self.config.min_pool_size)
        if target is None:
            return []
        self.state.record(now, target, Role.DECODE, source)
        if self.config.reset_sustain_after_flip:
            self._sustained = 0
        return [Flip(target, Role.DECODE)]

    def act(self, state: ControlState) -> list[Flip]:
        self._proposal = (self.state.last_p2d_flip_s, self.state.flips_recorded, self._sustained)
        return self.decide(state)

    def decide(self, state: ControlState) -> list[Flip]:
        """This interval's flips; ``act`` wraps it to remember the state they will be judged against."""
        return self.monitoring_pass(state, list(state.instances))

    def _note_sustained(self) -> None:
        """The sustain count after this interval's pass, before a flip may reset it."""
        if self._proposal is not None:
            self._proposal = (*self._proposal[:2], self._sustained)

    def sync_applied(self, now: float, proposed: Sequence[Flip], applied: Sequence[Flip]) -> None:
        """Make the cooldown clock and sustain count follow the flips that took effect, not the ones
        ``act`` proposed: as a teacher beside a learner (the env applies the learner's action) or when
        a cluster refuses some flips. Without it the teacher would believe it had flipped, wait out a
        cooldown that never started and restart a sustain count that never fired."""
        if self._proposal is None or list(applied) == list(proposed):
            return
        last_p2d, recorded, sustained = self._proposal
        self._proposal = None
        self.state.last_p2d_flip_s = last_p2d
        self.state.forget_flips_since(recorded)
        self._sustained = sustained
        for f in applied:
            role = Role(f.role)
            self.state.record(now, f.instance_id, role, "applied")
            if role is Role.DECODE and self.config.reset_sustain_after_flip:
                self._sustained = 0


class ArrowIntervalController(ArrowMonitor):
    """Arrow's instance scheduling at control-interval granularity (the learned agent's seat).

    Acts from the ``ControlState`` alone (plus fixed config and profiles). Per interval:
    1. D→P (interval version of Alg. 1 step 4, never cooldown-gated, §5.5): when prefill is
       predicted to miss TTFT (``d2p_trigger``) and the decode pool is not overloaded
       (LD < threshold per ``overload_rule``), flip decode instances to prefill via Alg. 3.
    2. Otherwise Alg. 2's monitoring pass (P→D, sustained, cooldown), and optionally Alg. 1
       step 4's P→D rule (no decode instance has TPOT capacity for a window-mean request).
    A D→P flip suppresses P→D in the same interval, so one interval never reverses itself.
    Pair it with ``ArrowRouter(enable_flips=False)``.
    """

    name = "arrow-interval"

    def _profile(self, instance_id: int) -> InstanceProfile | None:
        return profile_of(self.profiles, instance_id)

    def _slo(self):
        if self.info is None:
            raise RuntimeError("ArrowIntervalController.act called before reset(info)")
        return self.info.slo

    def decode_overloaded(self, ld: float) -> bool:
        """Arrow §5.5 overload rule: D→P is aborted while the decode pool is overloaded."""
        threshold = self.config.l_shrink if self.config.overload_rule == "l_shrink" else self.config.l_expand
        return not ld < threshold

    def prefill_predicted_to_miss(self, state: ControlState, views: Sequence[InstanceView]) -> bool:
        """Interval form of Alg. 1's "no prefill instance meets the TTFT SLO" (step 3 empty)."""
        w = state.window
        pending = w.pending_predicted_ttft_misses > 0
        predicted = False
        isl = w.arrival_input_tokens_mean
        prefill = [v for v in views if v.role is Role.PREFILL and v.healthy]
        if w.arrivals > 0 and isl > 0 and prefill:
            ttft = self._slo().ttft_s * self.config.ttft_headroom
            best = math.inf
            for v in prefill:
                prof = self._profile(v.instance_id)
                if prof is None:
                    continue
                best = min(best, resident_prefill_time(v, prof) + prof.prefill_time(isl))
            predicted = best > ttft
        if self.config.d2p_trigger == "pending_misses":
            return pending
        if self.config.d2p_trigger == "predicted":
            return predicted
        return pending or predicted

    def decode_without_capacity(self, state: ControlState, views: Sequence[InstanceView]) -> bool:
        """Interval form of Alg. 1 step 4 (decode): no decode instance has c2 ≤ 0 for a request of
        the window's mean input length, i.e. Σ L(rd) + L(r) > MT(i, SLO_TPOT) everywhere."""
        w = state.window
        decode = [v for v in views if v.role is Role.DECODE and v.healthy]
        if not decode or w.arrivals == 0:
            return False
        length = w.arrival_input_tokens_mean + 1.0
        tpot = self._slo().tpot_s
        max_seqs = (self.info.extra or {}).get("max_num_seqs") if self.info is not None else None
        for v in decode:
            prof = self._profile(v.instance_id)
            if prof is None:
                return False
            mt = prof.max_tokens(tpot)
            if self.config.decode_capacity_limits:
                mt = min(mt, float(v.kv_capacity_tokens))
                if max_seqs is not None and v.num_decode + 1 > max_seqs:
                    continue  # no batch slot: this instance has no capacity
            if v.decode_tokens + length - mt <= 0:
                return False
        return True

    def decide(self, state: ControlState) -> list[Flip]:
        views = list(state.instances)
        now = state.now
        ld = float(state.window.decode.load)
        flips: list[Flip] = []
        # 1. D→P, rapid and never cooldown-gated (§5.5), unless decode is overloaded.
        if not self.decode_overloaded(ld) and self.prefill_predicted_to_miss(state, views):
            for _ in range(self.config.max_d2p_per_interval):
                target = select_flip_instance(views, Role.PREFILL, self.profiles, self.config.min_pool_size)
                if target is None:
                    break
                self.state.record(now, target, Role.PREFILL, "interval-d2p")
                flips.append(Flip(target, Role.PREFILL))
                views = with_role(views, target, Role.PREFILL)
        if flips:
            # Keep Alg. 2's clock and sustain count consistent without reversing this interval.
            self.monitoring_pass_observe_only(state)
            return flips
        # 2. Alg. 2 (P→D, sustained, cooldown-gated).
        flips = self.monitoring_pass(state, views)
        if not flips and self.config.p2d_capacity_rule and self.decode_without_capacity(state, views):
            flips = self.flip_to_decode(now, views, source="interval-p2d")
        return flips

    def monitoring_pass_observe_only(self, state: ControlState) -> None:
        """Advance Alg. 2's pass clock and sustain counter without flipping."""
        now = state.now
        if now - self._last_pass_s < self.config.update_interval_s - 1e-9:
            return
        self._last_pass_s = now
        lp, ld = float(state.window.prefill.load), float(state.window.decode.load)
        self.state.prefill_load, self.state.decode_load = lp, ld
        self._sustained = self._sustained + 1 if self.trigger(lp, ld) else 0
        self._note_sustained()
