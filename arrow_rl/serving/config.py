"""Validated configuration of the router: the instances it fronts, SLOs, timeouts, limits.

Read from YAML or JSON (``configs/live/router.yaml``) by ``arrow_rl.cluster.live.config.load_config_file``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from arrow_rl.arrow.mixed import MixedConfig
from arrow_rl.cluster.base import SLO, Role


class InstanceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Base URL of the vLLM OpenAI server, e.g. http://127.0.0.1:8100")
    role: Role = Field(description="Initial routing role: prefill, decode or mixed (serves plain requests whole)")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"instance url must start with http:// or https://, got {v!r}")
        return v.rstrip("/")


class RouterConfig(BaseModel):
    """Everything ``arrow-rl serve`` needs. Defaults are documented in docs/live_cluster.md."""

    model_config = ConfigDict(extra="forbid")

    instances: list[InstanceSpec] = Field(min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    routing: Literal["arrow", "arrow-noflip", "least-loaded"] = "arrow"
    slo_ttft_s: float = Field(2.0, gt=0)
    slo_tpot_s: float = Field(0.1, gt=0)
    api_key: str | None = Field(None, description="Bearer key forwarded to instances (vLLM --api-key)")
    connect_timeout_s: float = Field(2.0, gt=0)
    # Per-leg deadlines scale with the leg's work (docs/live_cluster.md, "Timeouts"): base + per-token
    # × tokens, capped by the *_timeout_s fields. A hung *instance* is handled by the health checks,
    # which move its waiting legs within ~2 s; these deadlines catch one stuck request.
    leg_timeout_base_s: float = Field(30.0, gt=0, description="Fixed part of every leg's deadline")
    prefill_timeout_per_token_s: float = Field(0.02, ge=0, description="Added per prompt token to a leg that "
                                               "prefills (the prefill leg; a plain or MIXED leg's first event)")
    decode_timeout_per_token_s: float = Field(0.5, ge=0, description="Added per max_tokens to a whole "
                                              "non-streaming decode leg")
    prefill_timeout_s: float = Field(120.0, gt=0, description="Cap of the prefill leg's deadline (max_tokens=1)")
    stream_idle_timeout_s: float = Field(60.0, gt=0, description="Longest gap between two decode chunks")
    request_timeout_s: float = Field(600.0, gt=0, description="Cap of a whole non-streaming decode leg's deadline")
    health_interval_s: float = Field(0.5, gt=0, description="Pause between two health checks of one instance "
                                     "(a failed check is repeated at once)")
    health_timeout_s: float = Field(0.75, gt=0, description="A /health answer slower than this is a failure")
    unhealthy_after_failures: int = Field(2, ge=1, description="Consecutive failed health checks")
    end_silent_streams: bool = Field(True, description="When an instance leaves rotation, end its streams that "
                                     "have been silent for health_timeout_s now (error event) rather than after "
                                     "stream_idle_timeout_s; false: let them wait (a short freeze then resumes them)")
    write_timeout_s: float = Field(10.0, gt=0, description="A client that reads nothing of what the router has "
                                   "queued for it for this long is disconnected (its legs are cancelled)")
    client_sndbuf_bytes: int | None = Field(65536, ge=4096, description="Kernel send buffer per client socket "
                                            "(SO_SNDBUF; None: the OS default, which autotunes up to megabytes)")
    max_client_connections: int = Field(1000, ge=1, description="Open client connections; one more gets a 503 "
                                        "and a close (mind the process's open-file limit)")
    max_flip_sources: int = Field(32, ge=1, description="Distinct flip 'source' label values on /metrics; "
                                  "later ones count under 'other'")
    journal: str | None = Field(None, description="JSONL request journal path (None: no journal)")
    journal_flush_s: float = Field(0.5, gt=0, description="Journal lines are written in batches this often, "
                                   "off the request path")
    max_body_bytes: int = Field(8 * 2**20, ge=1024, description="Largest client body accepted (413 beyond)")
    client_keepalive_s: float = Field(5.0, gt=0, description="An idle client keep-alive connection is closed "
                                      "after this long (uvicorn's default, which vLLM serves with)")
    client_first_request_s: float = Field(30.0, gt=0, description="A new connection that has sent no request "
                                          "after this long is closed (a guard against connections held open "
                                          "empty); longer than the keep-alive because a client that has just "
                                          "connected is about to send, and closing under it resets its request")
    max_model_len: int | None = Field(None, ge=2, description="Context length for the max_tokens check "
                                      "(None: learned from the instances' /v1/models)")
    max_records: int = Field(20_000, ge=1, description="Completed-request records kept in memory (a ring)")
    max_flips: int = Field(10_000, ge=1, description="Flip records kept in memory (a ring)")
    event_log_size: int = Field(20_000, ge=100, description="Events kept for /events (a ring; readers "
                                "that fall behind see lost=true)")
    profiles: str | None = Field(None, description="JSON file of per-instance InstanceProfiles")
    mixed: MixedConfig = Field(default_factory=MixedConfig, description="How requests split between the "
                               "disaggregated path and MIXED instances (arrow_rl.arrow.mixed; unused without them)")

    @model_validator(mode="after")
    def _pools(self) -> "RouterConfig":
        if len({i.url for i in self.instances}) != len(self.instances):
            raise ValueError("instance URLs must be distinct")
        return self

    @property
    def slo(self) -> SLO:
        return SLO(self.slo_ttft_s, self.slo_tpot_s)

