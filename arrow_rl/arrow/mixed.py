"""The MIXED dispatcher (docs/design_mixed_role.md): which requests skip disaggregation.

A cluster may hold three pools: PREFILL and DECODE (Arrow's) and MIXED, whose instances serve a
*plain* request whole, prefill then decode in place, like a colocated vLLM instance. Each arriving
request goes **either** the disaggregated path (Arrow's Algorithm 1 over the P and D pools,
unchanged: the wrapped router) **or** to one MIXED instance. ``MixedDispatcher`` makes that choice
in front of the wrapped router and hands everything else to it; the emulator serves a request
whole when its prompt lands on a MIXED instance (``arrow_rl.cluster.emulator.cluster``).

Which MIXED instance: the one with the least work, prompt tokens still to compute plus resident
decode tokens (ties: lowest id), healthy ones first: the rule ``LeastLoadedRouter`` applies in
colocated mode, so an all-MIXED cluster serves exactly as the ``colocated`` baseline does.

Whether to use it (``MixedConfig.mixed_policy``; the paper is silent, these are our choices):

- ``cost`` (default): MIXED when that instance's predicted TTFT is below the best prefill
  instance's (both Σ T(rp) + T(r) from the instance's own profile, Alg. 1's c2, §5.3) *and* its
  predicted TPOT load with the request added, decode_interval(Σ L(rd) + L(r)) / SLO_TPOT, is under
  ``tpot_load_limit`` (default Arrow's L_EXPAND, 1.0). Ties go to the disaggregated path. The
  profile prices a MIXED instance's prompt as if it ran alone and its decode batch without the
  chunks mixed in, so the prediction is optimistic on a busy MIXED instance. With
  ``cost_counts_handoff`` (default on: measured in docs/design_mixed_role.md) the disaggregated
  side also pays its KV transfer and the decode instance's first step (where the emulator's TTFT
  ends); off, the comparison is prefill against prefill, and MIXED instances sit idle while the
  prefill pool queues.
- ``fraction``: a fixed share, deterministic: after k dispatched requests, ceil(k · ``fraction``)
  went MIXED (tests, ablations).
- ``prompt-threshold``: prompts shorter than ``prompt_threshold_tokens`` go MIXED (colocation
  wins on short prompts: docs/leaderboard.md).

The policy decides only when both paths exist. With no MIXED instance every call goes straight to
the wrapped router (bit-identical to running it alone); with an empty P or D pool, or no other
choice, requests go MIXED; with no healthy MIXED instance (all inside a flip delay) they go the
disaggregated path. Decode legs (disaggregated requests only) are the wrapped router's. The
dispatcher never flips: Arrow's Algorithms 1-3 flip P<->D only (``Role.other``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from arrow_rl.cluster.base import InstanceView, Role
from arrow_rl.perf.profile import InstanceProfile
from arrow_rl.routing.base import RequestRouter, RoutingContext
from arrow_rl.workload.workload import Request

_MIXED, _PREFILL, _DECODE = Role.MIXED, Role.PREFILL, Role.DECODE

MixedPolicy = Literal["cost", "fraction", "prompt-threshold"]


class MixedConfig(BaseModel):
    """How requests split between the disaggregated path and the MIXED pool (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    mixed_policy: MixedPolicy = Field(
        "cost", description="cost (predicted TTFT and TPOT load), fraction (fixed share) or "
        "prompt-threshold (short prompts go MIXED)")
    fraction: float = Field(0.5, ge=0, le=1, description="fraction: share of requests sent MIXED")
    prompt_threshold_tokens: int = Field(
        1024, ge=1, description="prompt-threshold: prompts with fewer input tokens go MIXED")
    cost_counts_handoff: bool = Field(
        True, description="cost: add the KV transfer (the preset's kv_transfer_time of the prompt) and "
        "the least-loaded decode instance's first step to the disaggregated side's predicted TTFT "
        "(docs/design_mixed_role.md: measured, up to +83% serving rate; on by default)")
    tpot_load_limit: float = Field(
        1.0, gt=0, description="cost: the MIXED instance's predicted decode interval with the request "
        "added, over SLO_TPOT, must be below this (default Arrow's L_EXPAND, §5.5)")

    @classmethod
    def from_mapping(cls, data: dict[str, Any], where: str = "mixed config") -> "MixedConfig":
        """Validate ``data``; an error is one line naming ``where``, the field and the value."""
        try:
            return cls(**data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
                                 for e in exc.errors())
            raise ValueError(f"{where}: invalid MIXED dispatch config: {problems}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "MixedConfig":
        """Load a file (a top-level ``mixed:`` section is accepted)."""
        from arrow_rl.config_io import read_config_mapping

        data = read_config_mapping(path, "mixed config")
        data = data.get("mixed", data) if isinstance(data.get("mixed"), dict) else data
        return cls.from_mapping(data, str(path))


class MixedDispatcher:
    """A ``RequestRouter`` that sends some requests whole to MIXED instances and the rest to
    ``inner`` (Arrow's Algorithm 1 in the registry's policies). See the module docstring."""

    def __init__(self, inner: RequestRouter, config: MixedConfig | None = None) -> None:
        # a dispatcher around a dispatcher replaces it (registry policies already carry one):
        # two policies in a row would each send a share MIXED
        while isinstance(inner, MixedDispatcher):
            inner = inner.inner
        self.inner = inner
        self.config = config or MixedConfig()
        self.name = f"{getattr(inner, 'name', 'router')}+mixed-{self.config.mixed_policy}"
        self._profiles: dict[int, InstanceProfile] = {}
        self._transfer: Callable[[int], float] | None = None   # the preset's KV transfer time
        self.decisions = 0      # requests the policy decided on (both paths existed)
        self.chosen_mixed = 0   # ... of which it sent to the MIXED pool
        self.sent_mixed = 0     # requests sent to a MIXED instance, forced or chosen

    @property
    def state(self) -> Any:
        """The wrapped router's ``ArrowState`` (one P→D clock with the monitor), if it has one."""
        return getattr(self.inner, "state", None)

    @property
    def enable_flips(self) -> bool:
        """Whether the wrapped router flips (Algorithm 1's D→P / P→D steps); the dispatcher never does."""
        return bool(getattr(self.inner, "enable_flips", False))

    @property
    def inner_name(self) -> str:
        """The wrapped router's name (the live router's routing policies are named by it)."""
        return str(getattr(self.inner, "name", "router"))

    def reset(self, num_instances: int) -> None:
        self.inner.reset(num_instances)
        self._profiles.clear()
        self._transfer = None
        self.decisions = self.chosen_mixed = self.sent_mixed = 0

    # -- the MIXED pool ---------------------------------------------------------------------------
    @staticmethod
    def pick_mixed(mixed: Sequence[InstanceView]) -> InstanceView:
        """The least-loaded MIXED instance, healthy ones first (``LeastLoadedRouter``'s colocated
        rule: prompt tokens to compute + decode tokens, then lowest id)."""
        pool = [v for v in mixed if v.healthy] or list(mixed)
        return min(pool, key=lambda v: (v.prefill_tokens + v.decode_tokens, v.instance_id))

    def _profile(self, ctx: RoutingContext, i: int) -> InstanceProfile:
        prof = self._profiles.get(i)
        if prof is None:   # §5.2: profiles are fixed per instance
            prof = self._profiles[i] = ctx.profile(i)
        return prof

    def predicted_ttft(self, request: Request, v: InstanceView, ctx: RoutingContext) -> float:
        """Σ T(rp, i) over the instance's queued prompts plus T(r, i): Alg. 1's c2 (§5.3)."""
        prof = self._profile(ctx, v.instance_id)
        return prof.prefill_time_sum(v.num_prefill, v.prefill_tokens, v.prefill_tokens_sq) + \
            prof.prefill_time(request.input_tokens)

    def predicted_tpot_load(self, request: Request, v: InstanceView, ctx: RoutingContext) -> float:
        """The decode interval with the request's L(r) = input + 1 added, over SLO_TPOT (§5.5's LD)."""
        prof = self._profile(ctx, v.instance_id)
        return prof.decode_interval(v.decode_tokens + request.input_tokens + 1) / ctx.slo.tpot_s

    def predicted_handoff(self, request: Request, views: Sequence[InstanceView], ctx: RoutingContext) -> float:
        """What a disaggregated request waits for after its prompt and a plain one does not: the KV
        transfer (the preset's ``kv_transfer_time``, NICs assumed idle) and the decode instance's
        first step, which emits the client's first token (the emulator's TTFT, cluster.py), priced
        on the decode instance whose interval with L(r) added is shortest. 0 where the context
        names no preset (the transfer is then unknown) and no decode instance exists."""
        if self._transfer is None:
            preset = getattr(ctx, "preset", None)
            if not hasattr(preset, "kv_transfer_time"):
                try:
                    from arrow_rl.perf.presets import get_preset

                    preset = get_preset(ctx.info.preset)  # type: ignore[attr-defined]
                except (AttributeError, KeyError, ValueError):
                    preset = None
            self._transfer = preset.kv_transfer_time if preset is not None else (lambda tokens: 0.0)
        decode = [v for v in views if v.role is _DECODE]
        decode = [v for v in decode if v.healthy] or decode
        first_step = min((self._profile(ctx, v.instance_id).decode_interval(v.decode_tokens + request.input_tokens + 1)
                          for v in decode), default=0.0)
        return self._transfer(request.input_tokens) + first_step

    def choose_mixed(self, request: Request, m: InstanceView, views: Sequence[InstanceView],
                     ctx: RoutingContext) -> bool:
        """The policy's verdict for a request both paths could take: True = MIXED instance ``m``."""
        c = self.config
        self.decisions += 1
        if c.mixed_policy == "fraction":
            go = self.chosen_mixed < self.decisions * c.fraction - 1e-9
        elif c.mixed_policy == "prompt-threshold":
            go = request.input_tokens < c.prompt_threshold_tokens
        else:
            prefill = [v for v in views if v.role is _PREFILL]
            prefill = [v for v in prefill if v.healthy] or prefill
            best_p = min((self.predicted_ttft(request, v, ctx) for v in prefill), default=math.inf)
            if c.cost_counts_handoff:
                best_p += self.predicted_handoff(request, views, ctx)
            go = (self.predicted_ttft(request, m, ctx) < best_p
                  and self.predicted_tpot_load(request, m, ctx) < c.tpot_load_limit)
        self.chosen_mixed += go
        return go

    # -- RequestRouter ----------------------------------------------------------------------------
    def route_prefill(self, request: Request, ctx: RoutingContext) -> int:
        num_mixed = getattr(ctx, "num_mixed", None)
        if num_mixed is not None and num_mixed() == 0:   # the common case, O(1) on the emulator
            return self.inner.route_prefill(request, ctx)
        views = ctx.instances()
        mixed = [v for v in views if v.role is _MIXED]
        if not mixed:
            return self.inner.route_prefill(request, ctx)
        disaggregated = any(v.role is _PREFILL for v in views) and any(v.role is _DECODE for v in views)
        if disaggregated and not any(v.healthy for v in mixed):
            return self.inner.route_prefill(request, ctx)
        m = self.pick_mixed(mixed)
        if not disaggregated or self.choose_mixed(request, m, views, ctx):
            self.sent_mixed += 1
            return m.instance_id
        return self.inner.route_prefill(request, ctx)

    def route_decode(self, request: Request, prefill_instance: int, ctx: RoutingContext) -> int:
        """Decode legs of disaggregated requests: the wrapped router's (a plain request has none)."""
        return self.inner.route_decode(request, prefill_instance, ctx)
