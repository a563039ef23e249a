"""Arrow's configuration and the state its router and monitor share (§5.3, §5.5).

- ``ArrowConfig``: every constant the paper leaves open, with a documented default
  (docs/arrow.md, "Constants", which cites the paper's sections for each).
- ``ArrowState``: what the router (Algorithm 1) and the monitor (Algorithm 2) share, above all the
  time of the last P→D flip, so the P→D cooldown runs on ONE clock whichever of them flips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from arrow_rl.cluster.base import Role


class ArrowConfig(BaseModel):
    """Arrow's open constants. Defaults: Narwhal's (an independent reimplementation; docs/arrow.md
    "Configuration") unless stated; the paper gives no values. Tune per workload (scripts/tune_arrow.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    l_expand: float = Field(1.0, gt=0, description="Alg. 2 expand threshold: flip P→D when LD ≥ l_expand (§5.5).")
    l_shrink: float = Field(0.5, ge=0, description="Alg. 2 shrink threshold: flip P→D when LP ≤ l_shrink ≤ LD (§5.5).")
    cooldown_s: float = Field(10.0, ge=0, description="Minimum time between P→D flips (§5.5: P→D only).")
    update_interval_s: float = Field(1.0, gt=0, description="Δ, period of the Alg. 2 monitoring pass (§5.5).")
    sustain_count: int = Field(3, ge=1, description="Consecutive Alg. 2 passes the trigger must hold ('over a period of time', §5.5).")
    overload_rule: Literal["l_shrink", "l_expand"] = Field(
        "l_shrink",
        description="Alg. 1 step 4: D→P is aborted unless LD < this threshold (§5.5 overload rule; "
        "docs/arrow.md decision 3). 'l_shrink' keeps the D→P and Alg. 2 windows disjoint.",
    )
    candidate_set: Literal["role", "all"] = Field(
        "role",
        description="Ambiguity A1: instances Alg. 1 prices. 'role' = pool matching the leg's phase "
        "(all instances if that pool is empty); 'all' = every instance.",
    )
    decode_load_source: Literal["monitor", "predicted"] = Field(
        "monitor",
        description="Where Alg. 1's overload test reads LD: the monitor's last measured window "
        "(§5.5 definition) or a profile prediction from resident decode tokens.",
    )
    ttft_headroom: float = Field(
        1.0, gt=0, le=1,
        description="Extension, not in the paper (paper = 1.0): Alg. 1 step 3 treats a prefill "
        "candidate as SLO-feasible iff c2 <= ttft_headroom x SLO_TTFT, leaving room for the error "
        "of the quadratic T(r) prediction when queues are packed to the SLO edge.",
    )
    decode_capacity_limits: bool = Field(
        False,
        description="Extension, not in the paper (paper = false): a decode candidate also needs room "
        "under the engine's hard limits, i.e. Σ L(rd) + L(r) <= KV capacity and num_decode < "
        "max_num_seqs, besides MT(i, SLO_TPOT). Arrow's MT comes from the ITL fit alone and cannot "
        "see decode legs queueing for a batch slot or KV (§4.3's q2/q3).",
    )
    min_pool_size: int = Field(1, ge=1, description="Alg. 3 guard: a flip never leaves a pool with fewer instances (paper: 1).")
    reset_sustain_after_flip: bool = Field(
        True, description="Alg. 2: restart the sustain count after a flip (Narwhal's reading; paper silent)."
    )
    initial_prefill: int | None = Field(
        None, ge=1, description="Prefill instances at start; None = half the cluster (§6.1: 4P4D on 8)."
    )
    # Interval controller only: the interval-level version of Algorithm 1's flips.
    d2p_trigger: Literal["pending_misses", "predicted", "either"] = Field(
        "either",
        description="Interval D→P trigger: queued requests already predicted to miss TTFT "
        "(window.pending_predicted_ttft_misses > 0), a window-mean request fitting on no prefill "
        "instance within the TTFT SLO (Alg. 1 step 3 check), or either.",
    )
    max_d2p_per_interval: int = Field(1, ge=1, description="Interval D→P flips allowed per control interval.")
    p2d_capacity_rule: bool = Field(
        True,
        description="Interval controller also applies Alg. 1 step 4's P→D rule: flip when no decode "
        "instance has TPOT capacity (MT) for a window-mean request (cooldown-gated).",
    )

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> "ArrowConfig":
        if self.l_shrink > self.l_expand:
            raise ValueError(f"l_shrink ({self.l_shrink}) must be <= l_expand ({self.l_expand})")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ArrowConfig":
        """Load a config file; errors name the file and the offending field."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read Arrow config: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: Arrow config must be a mapping, got {type(data).__name__}")
        data = data.get("arrow", data)  # accept a top-level "arrow:" section
        data = {k: v for k, v in data.items() if not str(k).startswith("_")}  # "_comment"-style keys
        try:
            return cls(**data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"{path}: invalid Arrow config: {problems}") from exc

    def to_yaml_dict(self) -> dict:
        return self.model_dump()


@dataclass
class FlipEvent:
    time_s: float
    instance_id: int
    role: Role
    source: str  # "alg1" (router), "alg2" (monitor), "interval-d2p", "interval-p2d"


@dataclass
class ArrowState:
    """State shared by Arrow's router and monitor within one run (one P→D cooldown clock)."""

    last_p2d_flip_s: float = -math.inf
    decode_load: float | None = None   # LD of the last monitoring pass (Alg. 2), read by Alg. 1 step 4
    prefill_load: float | None = None  # LP of the last monitoring pass
    flip_log: list[FlipEvent] = field(default_factory=list)
    # A long-running process (the live router, deploy) keeps only the newest flips: with a limit,
    # the log is cut back to ``flip_log_limit`` entries once it holds twice as many. None: all
    # (an emulated run reads its whole log afterwards).
    flip_log_limit: int | None = None
    flips_recorded: int = 0  # every flip ever recorded; the log holds the newest of them

    def reset(self) -> None:
        self.last_p2d_flip_s = -math.inf
        self.decode_load = None
        self.prefill_load = None
        self.flip_log = []
        self.flips_recorded = 0

    def p2d_allowed(self, now: float, cooldown_s: float) -> bool:
        """Arrow §5.5 / Alg. 3: the cooldown applies to P→D only."""
        return now - self.last_p2d_flip_s >= cooldown_s

    def record(self, now: float, instance_id: int, role: Role, source: str) -> None:
        if role is Role.DECODE:
            self.last_p2d_flip_s = now
        self.flip_log.append(FlipEvent(now, instance_id, role, source))
        self.flips_recorded += 1
        limit = self.flip_log_limit
        if limit is not None and len(self.flip_log) > 2 * limit:
            del self.flip_log[:len(self.flip_log) - limit]

    def forget_flips_since(self, recorded: int) -> None:
        """Drop the flips recorded after the first ``recorded`` (a proposal that did not take effect)."""
        newer = self.flips_recorded - recorded
        if newer > 0:
            del self.flip_log[max(0, len(self.flip_log) - newer):]
            self.flips_recorded = recorded
