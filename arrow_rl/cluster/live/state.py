"""The router's view of its instances: roles, health and in-flight work, kept from its own
bookkeeping (no scraping needed on the request path).

Everything here runs on the router's single asyncio event loop, so a flip (a pool-membership
change) is atomic with respect to routing decisions: no request can observe half a flip.
"""

from __future__ import annotations

import collections
import itertools
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from arrow_rl.cluster.base import InstanceView, Role


class FlipError(ValueError):
    """A rejected role change; ``status`` is the HTTP status the admin API answers with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def serving_path_problem(before: list[Role], after: list[Role]) -> str:
    """Why roles ``after`` cannot replace ``before`` (a 409's reason), or "" when they can.

    A cluster must keep a way to serve every request: a MIXED instance (it serves a request
    whole), or a PREFILL and a DECODE instance (the disaggregated path). Without MIXED instances on
    either side this is Arrow's rule as the router always applied it: a P or D pool that had
    members keeps one (Alg. 3 never empties a pool; a pool empty at start, e.g. 2P0D, may stay so).
    With MIXED instances the P and D pools may empty (all of them going MIXED) while one MIXED
    instance remains; a batch that removes the last MIXED instance must leave both P and D.
    """
    count = {r: (sum(1 for x in before if x is r), sum(1 for x in after if x is r)) for r in Role}
    plural = lambda n: f"{n} instance{'s' if n != 1 else ''}"  # noqa: E731
    if count[Role.MIXED][1] > 0:
        return ""
    for role in (Role.PREFILL, Role.DECODE):
        b, a = count[role]
        if b > 0 and a == 0:
            return f"flip would empty the {role.value} pool (it has {plural(b)})"
    if count[Role.MIXED][0] > 0 and (count[Role.PREFILL][1] == 0 or count[Role.DECODE][1] == 0):
        return (f"flip would leave no way to serve every request: no mixed instance and "
                f"{plural(count[Role.PREFILL][1])} prefill, {plural(count[Role.DECODE][1])} decode "
                "(keep at least 1 mixed, or at least 1 prefill and 1 decode)")
    return ""


@dataclass
class InstanceState:
    """One vLLM instance as the router tracks it."""

    instance_id: int
    url: str
    role: Role
    healthy: bool = True
    unhealthy_reason: str = ""
    # In-flight bookkeeping (Arrow §5.3 cost terms need these sums; see InstanceView).
    num_prefill: int = 0
    prefill_tokens: int = 0
    prefill_tokens_sq: float = 0.0
    num_decode: int = 0
    decode_tokens: int = 0
    # From the last health/metrics poll (0 when unknown).
    kv_usage: float = 0.0
    kv_capacity_tokens: int = 0
    # Cumulative counters; readers take differences between two reads to get a window.
    itl_sum_s: float = 0.0
    itl_count: int = 0
    decode_tokens_out: int = 0
    prefill_tokens_done: int = 0
    first_tokens: int = 0
    busy_s: float = 0.0
    _busy_since: float | None = None
    failures: int = 0

    @property
    def inflight(self) -> int:
        return self.num_prefill + self.num_decode

    def view(self) -> InstanceView:
        cap = self.kv_capacity_tokens
        return InstanceView(
            instance_id=self.instance_id, role=self.role,
            num_prefill=self.num_prefill, prefill_tokens=self.prefill_tokens,
            prefill_tokens_sq=self.prefill_tokens_sq,
            num_decode=self.num_decode, decode_tokens=self.decode_tokens,
            kv_used_tokens=int(round(self.kv_usage * cap)), kv_capacity_tokens=cap,
            healthy=self.healthy,
        )


@dataclass
class FlipRecord:
    time_s: float
    instance_id: int
    old: Role
    new: Role
    source: str


class RouterState:
    """Instances, pools and the event log the live ``Cluster`` backend reads."""

    def __init__(self, urls: Iterable[str], roles: Iterable[Role | str], event_log_size: int = 200_000,
                 clock=time.time, flip_log_size: int = 10_000) -> None:
        urls = list(urls)
        roles = [Role(r) for r in roles]
        if not urls:
            raise ValueError("a router needs at least one instance")
        if len(urls) != len(roles):
            raise ValueError(f"{len(urls)} instance URLs but {len(roles)} roles")
        if len(set(urls)) != len(urls):
            raise ValueError(f"duplicate instance URL in {urls}")
        self.clock = clock
        self.instances = [InstanceState(i, u.rstrip("/"), r) for i, (u, r) in enumerate(zip(urls, roles))]
        # kept by apply_flips: the MIXED dispatcher asks on every request (O(1), as on the emulator)
        self.num_mixed = sum(1 for r in roles if r is Role.MIXED)
        # Bounded: a long-running router keeps the newest flips only (RouterConfig.max_flips).
        self.flips: collections.deque[FlipRecord] = collections.deque(maxlen=flip_log_size)
        self._seq = itertools.count(1)
        self.events: collections.deque[tuple[int, str, dict[str, Any]]] = collections.deque(maxlen=event_log_size)
        self.arrivals = 0
        self.next_request_id = itertools.count()
        # Called once each time an instance leaves rotation (the router aborts its waiting legs).
        self.on_unhealthy: Callable[[InstanceState], None] | None = None

    # ---- time -------------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock()

    # ---- pools ------------------------------------------------------------------------------
    def get(self, instance_id: int) -> InstanceState:
        if not isinstance(instance_id, int) or isinstance(instance_id, bool) or not (
                0 <= instance_id < len(self.instances)):
            raise FlipError(f"unknown instance {instance_id!r}; ids are 0..{len(self.instances) - 1}", 404)
        return self.instances[instance_id]

    def pool(self, role: Role) -> list[InstanceState]:
        return [s for s in self.instances if s.role is role]

    def healthy(self, role: Role | None = None) -> list[InstanceState]:
        return [s for s in self.instances if s.healthy and (role is None or s.role is role)]

    def views(self) -> list[InstanceView]:
        return [s.view() for s in self.instances]

    def apply_flips(self, flips: list[tuple[int, Role]], source: str) -> list[FlipRecord]:
        """Apply a batch of flips atomically: all validated first, then all applied, or none.

        Rejected (nothing changes): an unknown instance (404), and a batch whose result leaves the
        cluster without a way to serve (409, ``serving_path_problem``). A flip to the role an
        instance already has is a no-op. Flips drain (Arrow §5.2): work already on an instance
        finishes there whatever its new role; only new requests see the new pools.
        """
        new_roles = [s.role for s in self.instances]
        for iid, role in flips:
            self.get(iid)
            new_roles[iid] = Role(role)
        problem = serving_path_problem([s.role for s in self.instances], new_roles)
        if problem:
            raise FlipError(problem, 409)
        now = self.now()
        done: list[FlipRecord] = []
        for s, role in zip(self.instances, new_roles):
            if s.role is not role:
                rec = FlipRecord(now, s.instance_id, s.role, role, source)
                s.role = role
                self.num_mixed += (role is Role.MIXED) - (rec.old is Role.MIXED)
                self.flips.append(rec)
                done.append(rec)
                self.log("flip", instance=s.instance_id, old=rec.old.value, new=role.value, source=source)
        return done

    # ---- health -----------------------------------------------------------------------------
    def mark_unhealthy(self, s: InstanceState, reason: str) -> None:
        if s.healthy:
            s.healthy = False
            s.unhealthy_reason = reason
            self.log("health", instance=s.instance_id, healthy=False, reason=reason)
            if self.on_unhealthy is not None:   # the router moves the legs still waiting there
                self.on_unhealthy(s)

    def mark_healthy(self, s: InstanceState) -> None:
        if not s.healthy:
            s.healthy = True
            s.unhealthy_reason = ""
            self.log("health", instance=s.instance_id, healthy=True, reason="")

    # ---- in-flight bookkeeping ----------------------------------------------------------------
    def _busy_update(self, s: InstanceState, before: int) -> None:
        now = self.now()
        if before == 0 and s.inflight > 0:
            s._busy_since = now
        elif before > 0 and s.inflight == 0 and s._busy_since is not None:
            s.busy_s += now - s._busy_since
            s._busy_since = None

    def busy_seconds(self, s: InstanceState) -> float:
        extra = self.now() - s._busy_since if s._busy_since is not None else 0.0
        return s.busy_s + extra

    def begin_prefill(self, s: InstanceState, tokens: int) -> None:
        before = s.inflight
        s.num_prefill += 1
        s.prefill_tokens += tokens
        s.prefill_tokens_sq += float(tokens) * tokens
        self._busy_update(s, before)

    def end_prefill(self, s: InstanceState, tokens: int, computed: bool) -> None:
        before = s.inflight
        s.num_prefill -= 1
        s.prefill_tokens -= tokens
        s.prefill_tokens_sq -= float(tokens) * tokens
        if s.num_prefill == 0:  # clear float drift
            s.prefill_tokens, s.prefill_tokens_sq = 0, 0.0
        if computed:
            s.prefill_tokens_done += tokens
        self._busy_update(s, before)

    def begin_decode(self, s: InstanceState, context_tokens: int) -> None:
        before = s.inflight
        s.num_decode += 1
        s.decode_tokens += context_tokens
        self._busy_update(s, before)

    def grow_decode(self, s: InstanceState, tokens: int) -> None:
        s.decode_tokens += tokens

    def end_decode(self, s: InstanceState, context_tokens: int) -> None:
        before = s.inflight
        s.num_decode -= 1
        s.decode_tokens -= context_tokens
        if s.num_decode == 0:
            s.decode_tokens = 0
        self._busy_update(s, before)

    # ---- event log ----------------------------------------------------------------------------
    def log(self, kind: str, **data: Any) -> int:
        seq = next(self._seq)
        data.setdefault("t", self.now())
        self.events.append((seq, kind, data))
        return seq

    def log_event(self, kind: str, data: dict[str, Any]) -> int:
        """:meth:`log` for a dict the caller hands over and no longer changes (kept, not copied:
        the request path logs one per request); it holds its own ``t``."""
        seq = next(self._seq)
        self.events.append((seq, kind, data))
        return seq

    def events_after(self, seq: int, limit: int = 50_000) -> tuple[list[dict[str, Any]], int, bool]:
        """Events with sequence number > ``seq``; ``lost`` is True when the log already dropped some."""
        out: list[dict[str, Any]] = []
        lost = bool(self.events) and self.events[0][0] > seq + 1
        last = seq
        for s, kind, data in self.events:
            if s <= seq:
                continue
            out.append({"seq": s, "kind": kind, **data})
            last = s
            if len(out) >= limit:
                break
        return out, last, lost

    def last_seq(self) -> int:
        return self.events[-1][0] if self.events else 0
