"""Baseline instance-scheduling controllers over the same emulator and control loop as Arrow.

- ``NoFlipController``: never flips. With mode ``colocated`` it is the PD-colocated baseline (vLLM's
  default chunked prefill on every instance); with a fixed prefill count it is the static P:D
  split (DistServe-style offline planning).
- ``DynamoPlannerController``: NVIDIA Dynamo's load-based planner, modelled on its docs, moving
  one worker at a time between the two pools of a fixed-size cluster.
- ``OracleController``: clairvoyant lookahead reference (greedy over a finite horizon, so not an
  upper bound); every decision interval it asks the what-if planner (``arrow_rl.controllers.whatif``)
  to run each candidate split (P:D, or P:D:M with MIXED moves) over the recorded future trace, and
  moves to the one whose open-loop lookahead serves the most requests within SLO.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from arrow_rl.cluster.base import ClusterInfo, Flip, InstanceView, Role
from arrow_rl.control import ControlState
from arrow_rl.arrow.monitor import default_profiles
from arrow_rl.arrow.flip_selection import ProfileSource, profile_of, resident_prefill_time, select_flip_instance
from arrow_rl.controllers.role_flips import flips_to_roles
from arrow_rl.controllers.splits import Split, is_valid
from arrow_rl.controllers.whatif import RECORDED_FUTURE, Candidate, WhatIfPlanner


class NoFlipController:
    """Keeps the initial roles for the whole run (colocated and static P:D baselines)."""

    def __init__(self, name: str = "static") -> None:
        self.name = name

    def reset(self, info: ClusterInfo) -> None:
        pass

    def act(self, state: ControlState) -> list[Flip]:
        return []


# ------------------------------------------------------------------------------------- Dynamo ---
class DynamoConfig(BaseModel):
    """Dynamo planner knobs, with Dynamo's documented defaults.

    Source: NVIDIA Dynamo Planner docs, load-based scaling
    (https://docs.nvidia.com/dynamo/latest/components/planner/planner-guide and the Planner Design
    page): every ``load_adjustment_interval`` (default 5 s) the planner scales a component up by one
    worker when ALL its workers are estimated above the SLA target, and down by one when ALL are
    below ``(n−1)/n × load_scaling_down_sensitivity`` (default 80%) of it; never below
    ``min_endpoint`` workers.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    adjustment_interval_s: float = Field(5.0, gt=0, description="Dynamo load_adjustment_interval (default 5 s).")
    scale_down_sensitivity: float = Field(0.8, gt=0, le=1, description="Dynamo load_scaling_down_sensitivity (80%).")
    min_endpoint: int = Field(1, ge=1, description="Dynamo min_endpoint: workers kept per component.")
    rebalance: Literal["difference", "scale-up"] = Field(
        "difference",
        description="How per-pool verdicts become flips on a fixed budget. 'difference': move one "
        "worker towards the pool with the higher verdict (a pool that would scale down lends its "
        "worker). 'scale-up': move only when a pool is all-over (+1) and the other is not.")


class DynamoPlannerController:
    """Dynamo-style load-based planner on a fixed budget of N stateless instances.

    Dynamo estimates each worker's TTFT / ITL from its active load with an online regression; we use
    the equivalent Arrow §5.2 profile (TTFT target in prefill seconds: SLO_TTFT − T(avg ISL), as
    Dynamo subtracts the average ISL from the regression's token target; ITL target in resident
    decode tokens: MT(i, SLO_TPOT)). Each component gets a verdict +1 (all workers above target),
    −1 (all below the scale-down boundary) or 0. Because the cluster size is fixed, "scale X up"
    is realised as one flip from the other pool, taken when X's verdict exceeds the other's (so a
    pool that wants to shrink lends to one that does not, and nothing moves when both agree).
    The flipped instance is chosen by Arrow's Algorithm 3 (least resident work), so only the
    planning rule differs from Arrow.
    """

    name = "dynamo"

    def __init__(self, config: DynamoConfig | None = None, profiles: ProfileSource = None) -> None:
        self.config = config or DynamoConfig()
        self._fixed_profiles = profiles
        self.profiles: ProfileSource = profiles
        self.info: ClusterInfo | None = None
        self._last_adjust_s = -math.inf
        self._last_isl = 0.0

    def reset(self, info: ClusterInfo) -> None:
        self.info = info
        self.profiles = self._fixed_profiles if self._fixed_profiles is not None else default_profiles(info)
        self._last_adjust_s = -math.inf
        self._last_isl = 0.0

    def _verdict(self, loads: Sequence[float], target: float) -> int:
        """+1 when every worker is over target, −1 when every worker is under the scale-down
        boundary target·(n−1)/n·sensitivity (Dynamo load-based scaling), else 0."""
        n = len(loads)
        if n == 0 or target <= 0:
            return 0
        if all(x > target for x in loads):
            return 1
        if n > self.config.min_endpoint:
            boundary = target * (n - 1) / n * self.config.scale_down_sensitivity
            if all(x < boundary for x in loads):
                return -1
        return 0

    def verdicts(self, views: Sequence[InstanceView], isl: float) -> tuple[int, int]:
        assert self.info is not None, "reset(info) first"
        slo = self.info.slo
        prefill = [v for v in views if v.role is Role.PREFILL and v.healthy]
        decode = [v for v in views if v.role is Role.DECODE and v.healthy]
        p_loads, p_targets = [], []
        for v in prefill:
            prof = profile_of(self.profiles, v.instance_id)
            p_loads.append(resident_prefill_time(v, prof))
            p_targets.append(slo.ttft_s - (prof.prefill_time(isl) if prof is not None and isl > 0 else 0.0))
        d_loads, d_targets = [], []
        for v in decode:
            prof = profile_of(self.profiles, v.instance_id)
            d_loads.append(float(v.decode_tokens))
            d_targets.append(prof.max_tokens(slo.tpot_s) if prof is not None else math.inf)
        p = self._verdict(p_loads, min(p_targets)) if p_targets else 0
        d = self._verdict(d_loads, min(d_targets)) if d_targets else 0
        return p, d

    def act(self, state: ControlState) -> list[Flip]:
        if state.window.arrivals > 0 and state.window.arrival_input_tokens_mean > 0:
            self._last_isl = state.window.arrival_input_tokens_mean
        if state.now - self._last_adjust_s < self.config.adjustment_interval_s - 1e-9:
            return []
        self._last_adjust_s = state.now
        views = list(state.instances)
        p, d = self.verdicts(views, self._last_isl)
        if p == d or (self.config.rebalance == "scale-up" and max(p, d) < 1):
            return []
        target = Role.PREFILL if p > d else Role.DECODE  # one worker per adjustment (Dynamo docs)
        chosen = select_flip_instance(views, target, self.profiles, self.config.min_endpoint)
        return [] if chosen is None else [Flip(chosen, target)]


# ------------------------------------------------------------------------------------- Oracle ---
class OracleConfig(BaseModel):
    """Bounds on the clairvoyant search (its cost is candidates × lookahead per decision)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision_interval_s: float = Field(5.0, gt=0, description="How often the oracle re-plans the split.")
    lookahead_s: float = Field(30.0, gt=0, description="Simulated future per candidate (open loop, split held fixed).")
    max_step: int = Field(2, ge=1, description="Candidates: current prefill count ± 1..max_step (clipped to 1..N−1); "
                          "with MIXED moves, k = 1..max_step instances moved between any two pools.")
    violation_weight: float = Field(1.0, ge=0, description="Score = within-SLO finishes − weight × (misses + doomed queued).")
    use_mixed: bool | None = Field(
        None, description="Candidates include flips to and from MIXED. None (default): yes when the bound "
        "cluster's router carries the MIXED dispatcher (every registry policy's does), so a MIXED "
        "instance gets served; False: P/D moves only, exactly the oracle before MIXED existed.")


class OracleController:
    """Clairvoyant reference (not an upper bound: greedy over ``lookahead_s``): search splits by
    lookahead on the what-if planner (``arrow_rl.controllers.whatif``) over the recorded future.

    Requires ``bind_cluster(cluster)`` (the runner calls it) because it must see the future trace;
    a cluster without ``clone()`` cannot host it. Each candidate split is reached with the fewest
    flips (``flips_to_roles``: Arrow Algorithm 3 choices for P<->D), simulated for ``lookahead_s``,
    and scored by requests finished within SLO minus violations (finished late, plus queued
    requests already predicted to miss TTFT at the end). Ties keep the current split, then the
    smaller move, then the earlier candidate.

    Candidates (``candidate_splits``): P/D-only, the current prefill count ± 1..``max_step`` over
    the non-MIXED instances. With MIXED moves (``OracleConfig.use_mixed``), every "move k
    instances from pool X to pool Y" for the six ordered pairs and k = 1..``max_step`` that leaves
    a valid split, plus the all-MIXED split when it is within ``max_step`` flips, and from
    all-MIXED the splits with k1 prefill and k2 decode instances, k1 + k2 <= ``max_step`` (neither
    is one move, since a disaggregated path needs both pools).
    """

    name = "oracle"

    def __init__(self, config: OracleConfig | None = None) -> None:
        self.config = config or OracleConfig()
        self.planner = WhatIfPlanner(self.config.lookahead_s, self.config.violation_weight)
        self.cluster: Any = None
        self.info: ClusterInfo | None = None
        self.profiles: ProfileSource = None
        self._last_decision_s = -math.inf
        self.evaluations = 0
        self.use_mixed = bool(self.config.use_mixed)

    def bind_cluster(self, cluster: Any) -> None:
        RECORDED_FUTURE.require(cluster, "the oracle")
        self.cluster = cluster
        if self.config.use_mixed is None:
            from arrow_rl.arrow.mixed import MixedDispatcher

            self.use_mixed = isinstance(getattr(cluster, "router", None), MixedDispatcher)

    def reset(self, info: ClusterInfo) -> None:
        self.info = info
        self.profiles = default_profiles(info)
        self._last_decision_s = -math.inf
        self.evaluations = 0

    def flips_to(self, views: Sequence[InstanceView], target_prefill: int) -> list[Flip]:
        """Alg. 3 flips that move the current split to ``target_prefill`` prefill instances (MIXED
        instances stay)."""
        now = Split.of(views)
        return flips_to_roles(views, Split(target_prefill, now.p + now.d - target_prefill, now.m).roles(),
                              self.profiles)

    def candidates(self, current: int, n: int) -> list[int]:
        """P/D-only candidates: prefill counts ``current`` ± 1..max_step within 1..n−1."""
        out = [current]
        for k in range(1, self.config.max_step + 1):
            out += [current - k, current + k]
        return [c for c in out if 1 <= c <= n - 1]

    def candidate_splits(self, current: Split) -> list[Split]:
        """The splits one decision may move to, ``current`` first (class docstring)."""
        if not self.use_mixed:
            pd = current.p + current.d   # P<->D moves over the non-MIXED instances (Alg. 3)
            return [Split(c, pd - c, current.m) for c in self.candidates(current.p, pd)]
        n, step = current.n, self.config.max_step
        out = [current]
        for k in range(1, step + 1):
            for a, b, c in _PAIR_MOVES:
                out.append(Split(current.p + k * a, current.d + k * b, current.m + k * c))
        every_mixed = Split(0, 0, n)
        if current.distance(every_mixed) <= step:
            out.append(every_mixed)
        if current == every_mixed:
            out += [Split(k1, k - k1, n - k) for k in range(2, step + 1) for k1 in range(1, k)]
        return [s for s in dict.fromkeys(out) if is_valid(s) and s.n == n]

    def due(self, now: float) -> bool:
        """Whether a decision is due at ``now`` (every ``decision_interval_s``); records it if so."""
        if now - self._last_decision_s < self.config.decision_interval_s - 1e-9:
            return False
        self._last_decision_s = now
        return True

    def candidates_now(self, views: Sequence[InstanceView]) -> tuple[Split, list[Candidate[Split]]]:
        """The current split and every candidate split with the flips that reach it, current first."""
        current = Split.of(views)
        return current, [Candidate(split, flips_to_roles(views, split.roles(), self.profiles),
                                   current.distance(split)) for split in self.candidate_splits(current)]

    def act(self, state: ControlState) -> list[Flip]:
        if self.cluster is None:
            raise RuntimeError("OracleController.act before bind_cluster(cluster)")
        if not self.due(state.now):
            return []
        current, candidates = self.candidates_now(list(state.instances))
        ranking = self.planner.rank(self.cluster, candidates, RECORDED_FUTURE)
        self.evaluations += len(ranking.scores)
        return list(ranking.best.flips) if ranking.best.key != current else []


# "move k instances X->Y" per unit k, for the six ordered pairs (P->D, D->P, P->M, M->P, D->M, M->D)
_PAIR_MOVES = ((-1, 1, 0), (1, -1, 0), (-1, 0, 1), (1, 0, -1), (0, -1, 1), (0, 1, -1))
