"""``EmulatorConfig``: the validated description of one emulated cluster.

A pydantic model so that the same object comes from Python, from ``arrow-rl simulate`` options and
from a YAML file (``configs/clusters/*.yaml``), with errors that name the file and the field.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from arrow_rl.config_io import format_validation_error, read_config_mapping  # noqa: F401 (re-exported)
from arrow_rl.cluster.base import SLO, Mode, Role

# Where the caller gives no SLO we use the one Arrow row that is published (Appendix A Table 1,
# Azure Code on Qwen3-32B: TTFT 10 s, TPOT 0.125 s; docs/arrow.md). The §5.5 loads in every
# MetricsWindow are SLO-relative, so they need some SLO; set your own for meaningful loads.
DEFAULT_SLO_TTFT_S = 10.0
DEFAULT_SLO_TPOT_S = 0.125


class EmulatorConfig(BaseModel):
    """One emulated cluster: instance type, size, mode, vLLM scheduler limits, SLOs, flip cost."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    preset: str = Field(description="instance type, e.g. h100-llama3.1-8b-tp1 (see arrow_rl.perf.presets)")
    num_instances: int = Field(ge=1, le=4096)
    mode: Mode = Mode.DISAGGREGATED
    num_prefill: int | None = Field(
        default=None, ge=0,
        description="instances labelled PREFILL at start (disaggregated; default half of the non-MIXED "
                    "instances, rounded down, >= 1)")
    num_mixed: int = Field(
        default=0, ge=0,
        description="instances labelled MIXED at start (disaggregated mode): they serve whole requests, "
                    "prefill then decode in place, like a colocated instance (docs/design_mixed_role.md)")
    max_num_batched_tokens: int = Field(
        default=None, ge=1, validate_default=False,
        description="vLLM token budget per iteration; default: what `vllm serve` picks on the preset's GPU "
                    "(8192 on H100, 2048 on A100)")
    max_num_seqs: int = Field(
        default=None, ge=1, validate_default=False,
        description="vLLM limit on running sequences; default: what `vllm serve` picks on the preset's GPU "
                    "(1024 on H100, 256 on A100)")
    slo_ttft_s: float | None = Field(default=None, gt=0)
    slo_tpot_s: float | None = Field(default=None, gt=0)
    flip_delay_s: float = Field(
        default=0.0, ge=0,
        description="after a flip the instance admits no new work of either role for this long "
                    "(Arrow §3.2 assumes ~0; docs/arrow.md decision 9)")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    client_timeout_s: float | None = Field(
        default=None, gt=0,
        description="clients give up on a request this long after sending it: a request still waiting to "
                    "start then is dropped (rejected as 'client timeout'), as vLLM aborts a request whose "
                    "client disconnected; None: clients wait forever")
    kv_lease_timeout_s: float = Field(
        default=480.0, gt=0,
        description="a prefill instance frees the KV of a finished prompt whose decode instance has "
                    "not started pulling it after this long; the decode instance then recomputes the "
                    "prompt (vLLM VLLM_NIXL_ABORT_REQUEST_TIMEOUT, default 480 s)")
    enable_prefix_caching: bool = Field(
        default=True,
        description="vLLM automatic prefix caching (on by default in vLLM v1): prompt blocks cached on "
                    "an instance are not computed again; acts only on workloads that carry prefixes")
    kv_link_sharing: bool = Field(
        default=True,
        description="concurrent KV transfers share each instance's NIC bandwidth (max-min fair, "
                    "per direction); false: every transfer gets the full bandwidth alone")
    exact_stepping: bool = Field(
        default=False,
        description="reference mode: simulate every decode iteration one by one instead of summing "
                    "runs of identical decode batches in closed form (tests compare the two)")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        from arrow_rl.perf.presets import list_presets

        if value not in list_presets():
            raise ValueError(f"unknown preset {value!r}; valid presets: {', '.join(list_presets())}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _engine_defaults(cls, data: object) -> object:
        """Unset scheduler limits take vLLM's ``serve`` defaults for the preset's GPU. With no known
        preset there is no default to take: unset limits are dropped, so the one error reported is
        the preset's, not two more about limits the user never passed."""
        if isinstance(data, dict):
            from arrow_rl.perf.presets import list_presets, vllm_serve_defaults

            data = dict(data)
            preset = data.get("preset")
            defaults = vllm_serve_defaults(preset) if isinstance(preset, str) and preset in list_presets() else None
            for key, default in zip(("max_num_batched_tokens", "max_num_seqs"), defaults or (None, None)):
                if data.get(key) is None:
                    if defaults is None:
                        data.pop(key, None)
                    else:
                        data[key] = default
        return data

    @model_validator(mode="after")
    def _check(self) -> "EmulatorConfig":
        if self.max_num_seqs > self.max_num_batched_tokens:
            # decode-first scheduling (Arrow §5.4) must always fit one token per running sequence
            raise ValueError(f"max_num_seqs ({self.max_num_seqs}) must not exceed max_num_batched_tokens "
                             f"({self.max_num_batched_tokens})")
        if self.mode is Mode.COLOCATED and self.num_mixed:
            raise ValueError(f"num_mixed: {self.num_mixed} MIXED instances need mode disaggregated (colocated "
                             f"mode already serves every request whole on every instance: it is all-MIXED)")
        if self.mode is Mode.DISAGGREGATED and self.num_mixed == 0:
            if self.num_instances < 2:
                raise ValueError("disaggregated mode needs num_instances >= 2 (one prefill, one decode)")
            p = self.prefill_count
            if not 1 <= p <= self.num_instances - 1:
                raise ValueError(f"num_prefill must be between 1 and num_instances-1 "
                                 f"({self.num_instances - 1}) in disaggregated mode, got {p}")
        if self.mode is Mode.DISAGGREGATED and self.num_mixed:
            # with a MIXED pool the disaggregated path may be absent (P or D empty): requests then
            # all go MIXED (arrow_rl/arrow/mixed.py)
            rest = self.num_instances - self.num_mixed
            if rest < 0:
                raise ValueError(f"num_mixed: {self.num_mixed} exceeds num_instances={self.num_instances}")
            p = self.prefill_count
            if not 0 <= p <= rest:
                raise ValueError(f"num_prefill must be between 0 and num_instances-num_mixed ({rest}), got {p}")
        if (self.slo_ttft_s is None) != (self.slo_tpot_s is None):
            raise ValueError("give both slo_ttft_s and slo_tpot_s, or neither")
        from arrow_rl.perf.presets import get_preset

        get_preset(self.preset, self.gpu_memory_utilization)  # the KV cache must fit beside the weights
        return self

    @property
    def prefill_count(self) -> int:
        """Instances labelled PREFILL at start: ``num_prefill``, or half of the non-MIXED ones
        (at least 1 while two or more are left for the P and D pools)."""
        if self.num_prefill is not None:
            return self.num_prefill
        rest = self.num_instances - self.num_mixed
        return max(1, rest // 2) if rest >= 2 or not self.num_mixed else 0

    @property
    def slo(self) -> SLO:
        """The configured SLO, or the documented default (10 s TTFT, 0.125 s TPOT)."""
        if self.slo_ttft_s is None or self.slo_tpot_s is None:
            return SLO(DEFAULT_SLO_TTFT_S, DEFAULT_SLO_TPOT_S)
        return SLO(self.slo_ttft_s, self.slo_tpot_s)

    @property
    def has_slo(self) -> bool:
        return self.slo_ttft_s is not None

    def initial_roles(self) -> tuple[Role, ...]:
        """Disaggregated: the first ``num_prefill`` instances are PREFILL, the last ``num_mixed``
        MIXED, the rest DECODE. Colocated: every instance is labelled PREFILL (roles are ignored
        there; it serves as an all-MIXED cluster does)."""
        if self.mode is Mode.COLOCATED:
            return tuple(Role.PREFILL for _ in range(self.num_instances))
        p, m = self.prefill_count, self.num_instances - self.num_mixed
        return tuple(Role.PREFILL if i < p else Role.DECODE if i < m else Role.MIXED
                     for i in range(self.num_instances))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "EmulatorConfig":
        """Load from YAML; errors name the file and the offending field."""
        data = read_config_mapping(path, "cluster config")
        if isinstance(data.get("cluster"), dict):  # allow a top-level ``cluster:`` section
            data = data["cluster"]
        try:
            return cls(**data)
        except ValidationError as exc:
            raise ValueError(f"{path}: {format_validation_error(exc)}") from None


