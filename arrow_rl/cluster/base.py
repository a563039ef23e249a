"""The backend-neutral cluster interface shared by the emulator and the live backend.

Controllers, the Gymnasium environment and the CLI only ever see these types, which is what lets a
live vLLM cluster replace the emulator (and a checkpoint replace the heuristic) without touching the
other side.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import Sequence


class Role(str, Enum):
    """An instance's routing label. Arrow §5.2: every instance can run both phases; a role only
    says which kind of *new* work the router sends it.

    PREFILL and DECODE are Arrow's two pools (prefill legs, decode legs). MIXED
    (docs/design_mixed_role.md) takes *plain* requests: it computes the prompt and decodes it in
    place, chunked prefill mixed into its decode batches, as a colocated vLLM instance does. Arrow's
    algorithms never flip to or from MIXED; a flip to or from it drains like a P<->D flip."""

    PREFILL = "prefill"
    DECODE = "decode"
    MIXED = "mixed"

    def other(self) -> "Role":
        """The other side of a P<->D flip. MIXED has none (Arrow flips P<->D only)."""
        if self is Role.MIXED:
            raise ValueError("Role.MIXED has no other role: Arrow's flips are PREFILL<->DECODE only")
        return Role.DECODE if self is Role.PREFILL else Role.PREFILL


class Mode(str, Enum):
    """How requests use the cluster."""

    COLOCATED = "colocated"          # every instance serves whole requests (vLLM default)
    # prefill on a prefill instance, decode on a decode instance; instances labelled MIXED serve
    # whole requests (an all-MIXED disaggregated cluster serves exactly as colocated mode does)
    DISAGGREGATED = "disaggregated"


@dataclass(frozen=True)
class SLO:
    """Latency service-level objectives in seconds (Arrow §6.1: a request attains its SLO when
    both TTFT and TPOT are met)."""

    ttft_s: float
    tpot_s: float

    def __post_init__(self) -> None:
        if not (self.ttft_s > 0 and self.tpot_s > 0):
            raise ValueError(f"SLOs must be positive, got ttft={self.ttft_s}, tpot={self.tpot_s}")


@dataclass(frozen=True)
class Flip:
    """Move ``instance_id`` to ``role`` (a routing change; resident work finishes in place)."""

    instance_id: int
    role: Role


@dataclass(frozen=True)
class InstanceView:
    """What a router or controller may know about one instance right now.

    Resident work is summarised by sums rather than lists so that Arrow's cost terms
    (§5.3: Σ T(rp, i) with T quadratic, Σ L(rd)) are O(1) to evaluate:
    Σ T = a·prefill_tokens_sq + b·prefill_tokens + c·num_prefill.
    """

    instance_id: int
    role: Role
    num_prefill: int            # resident requests that still have prefill tokens to compute
    prefill_tokens: int         # Σ tokens still to prefill over those requests
    prefill_tokens_sq: float    # Σ (tokens still to prefill)² over those requests
    num_decode: int             # resident requests in (or waiting for) the decode phase
    decode_tokens: int          # Σ L(rd): context length (input + generated so far) of decode requests
    kv_used_tokens: int
    kv_capacity_tokens: int
    healthy: bool = True

    @property
    def kv_usage(self) -> float:
        return self.kv_used_tokens / self.kv_capacity_tokens if self.kv_capacity_tokens else 0.0


@dataclass(frozen=True)
class RequestRecord:
    """The outcome of one request. Times are absolute cluster seconds; NaN where never reached."""

    request_id: int
    arrival_s: float
    input_tokens: int
    output_tokens: int
    prefill_instance: int = -1
    decode_instance: int = -1
    first_token_s: float = math.nan
    finish_s: float = math.nan
    rejected: bool = False
    reject_reason: str = ""
    preemptions: int = 0
    cached_tokens: int = 0        # prompt tokens found in the prefix cache at its first admission
    # when the prefill instance finished the prompt (and emitted its own token); in disaggregated
    # serving the client's first token (``first_token_s``) comes later, from the decode instance
    prefill_done_s: float = math.nan

    @property
    def finished(self) -> bool:
        return not self.rejected and not math.isnan(self.finish_s)

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def ttft_prefill_s(self) -> float:
        """Arrival to the prompt computed on the prefill instance (Arrow §4.2's TTFT); the
        client-visible ``ttft_s`` adds the KV transfer and the decode instance's first step."""
        return self.prefill_done_s - self.arrival_s

    @property
    def tpot_s(self) -> float:
        """(finish − first token) / (output tokens − 1), Arrow §4.3; NaN for one-token outputs."""
        if self.output_tokens <= 1:
            return math.nan
        return (self.finish_s - self.first_token_s) / (self.output_tokens - 1)

    @property
    def e2e_s(self) -> float:
        return self.finish_s - self.arrival_s

    def meets(self, slo: SLO) -> bool:
        """Both SLOs met (Arrow §6.1). One-token outputs have no TPOT and are judged on TTFT."""
        if not self.finished:
            return False
        tpot = self.tpot_s
        return self.ttft_s <= slo.ttft_s and (math.isnan(tpot) or tpot <= slo.tpot_s)


@dataclass(frozen=True)
class PoolStats:
    """Window statistics of one pool (all instances currently holding one role)."""

    num_instances: int = 0
    ttft_mean: float = 0.0        # s, over first tokens emitted in the window by the pool's instances
    ttft_p90: float = 0.0
    itl_mean: float = 0.0         # s, mean inter-token gap of decode iterations in the window
    tpot_mean: float = 0.0        # s, over requests that finished in the window
    tpot_p90: float = 0.0
    first_tokens: int = 0
    finished: int = 0
    waiting: int = 0              # requests queued (not yet scheduled) at window end
    running: int = 0              # requests in running batches at window end
    queued_prefill_tokens: int = 0
    kv_usage_mean: float = 0.0    # 0..1
    load: float = 0.0             # Arrow §5.5 SLO-relative pool load (LP for prefill, LD for decode)


@dataclass(frozen=True)
class InstanceWindowStats:
    """Window statistics of one instance."""

    instance_id: int
    role: Role
    ttft_mean: float = 0.0
    itl_mean: float = 0.0
    prefill_tokens_computed: int = 0
    decode_tokens_generated: int = 0
    busy_fraction: float = 0.0
    waiting: int = 0
    running: int = 0
    kv_usage: float = 0.0
    prefill_load: float = 0.0     # Arrow §5.5: Σ T(rp, i) / SLO_TTFT at window end
    decode_load: float = 0.0      # Arrow §5.5: mean token latency in the window / SLO_TPOT
    prefix_cache_hit_rate: float = 0.0   # prompt tokens found in its prefix cache / looked up (0: none)


@dataclass(frozen=True)
class MetricsWindow:
    """What happened in the cluster during [start_s, end_s): the controller's observation.

    Every field is something a real router plus Prometheus scraping can also measure, so a policy
    trained on the emulator reads the same quantities on a live cluster.
    """

    start_s: float
    end_s: float
    prefill: PoolStats
    decode: PoolStats
    instances: tuple[InstanceWindowStats, ...]
    arrivals: int = 0
    arrival_input_tokens_mean: float = 0.0
    arrival_input_tokens_p90: float = 0.0
    finished_output_tokens_mean: float = 0.0   # of requests that finished in the window (known only then, live)
    finished: int = 0
    finished_within_slo: int = 0
    ttft_violations: int = 0
    tpot_violations: int = 0
    rejected: int = 0
    pending_predicted_ttft_misses: int = 0   # queued requests whose predicted TTFT already exceeds the SLO
    # prefix caching (vLLM's vllm:prefix_cache_queries / vllm:prefix_cache_hits, in tokens)
    prefix_cache_query_tokens: int = 0
    prefix_cache_hit_tokens: int = 0
    # the MIXED pool; an empty PoolStats when the cluster has no MIXED instance
    mixed: PoolStats = PoolStats()

    @property
    def prefix_cache_hit_rate(self) -> float:
        """Prompt tokens found in a prefix cache / prompt tokens looked up in the window (0: none)."""
        q = self.prefix_cache_query_tokens
        return self.prefix_cache_hit_tokens / q if q else 0.0

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def arrival_rate(self) -> float:
        return self.arrivals / self.duration_s if self.duration_s > 0 else 0.0


@dataclass(frozen=True)
class ClusterInfo:
    """Static facts a controller gets at ``reset``."""

    num_instances: int
    preset: str
    slo: SLO
    mode: Mode
    initial_roles: tuple[Role, ...]
    extra: dict = field(default_factory=dict, compare=False)


class Cluster(ABC):
    """A prefill/decode cluster that advances in time and accepts role flips.

    Implemented by the discrete-event emulator (``arrow_rl.cluster.emulator``) and by the live
    vLLM backend (``arrow_rl.cluster.live``), where ``advance`` waits in wall time.
    """

    @property
    @abstractmethod
    def now(self) -> float:
        """Current cluster time in seconds."""

    @property
    @abstractmethod
    def info(self) -> ClusterInfo:
        """Static description of the cluster."""

    @abstractmethod
    def instances(self) -> Sequence[InstanceView]:
        """Current state of every instance, indexed by instance id."""

    @abstractmethod
    def flip(self, instance_id: int, role: Role) -> None:
        """Change where new work of each phase is routed. Resident work finishes in place (§5.2)."""

    @abstractmethod
    def advance(self, dt: float) -> MetricsWindow:
        """Run for ``dt`` seconds of cluster time and return the window's metrics."""

    @abstractmethod
    def completed(self) -> Sequence[RequestRecord]:
        """Records of every request that has ended so far (finished or rejected)."""

    @abstractmethod
    def ended_since(self, start: int) -> Sequence[RequestRecord]:
        """Records of the requests that ended after the first ``start`` to end, in the order they
        ended: a caller that remembers how many it has seen follows outcomes as a run goes (the
        evaluation's early stop) without copying every record each interval. A backend that keeps
        only the newest records returns those it still has."""

    @abstractmethod
    def first_token_s(self, request_id: int) -> float:
        """When the client saw request ``request_id``'s first token, in cluster time; NaN while the
        cluster knows of none (the request has not produced one, or the backend learns of first
        tokens only when requests end). Read for unended requests: a first token that is not
        there by arrival + TTFT SLO makes a certain SLO miss."""

    @abstractmethod
    def flip_history(self) -> Sequence[tuple[float, int, Role]]:
        """Every effective relabel so far, oldest first, whoever made it (a controller through
        :meth:`flip`, or the request router itself, as Arrow's Algorithm 1 does): ``(time_s,
        instance_id, new role)``. A flip to the role an instance already has is not in it. A
        backend that keeps only the newest flips returns those it still has."""

    @property
    def done(self) -> bool:
        """True when no more work will arrive or is in flight (a live cluster is never done)."""
        return False

    def roles(self) -> tuple[Role, ...]:
        return tuple(v.role for v in self.instances())

    def num_prefill(self) -> int:
        return sum(1 for r in self.roles() if r is Role.PREFILL)

    def num_mixed(self) -> int:
        """Instances labelled MIXED (routers skip their MIXED dispatch when there are none)."""
        return sum(1 for r in self.roles() if r is Role.MIXED)
