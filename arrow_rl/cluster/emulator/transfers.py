"""KV transfers over shared NICs: max-min fair sharing of each instance's link bandwidth.

Every instance has one NIC of ``bandwidth`` bytes/s in each direction (full duplex). A KV transfer
from instance s to instance d sends its bytes through s's egress and d's ingress; concurrent
transfers share them. Rates follow max-min fairness (progressive filling; the usual fluid model of
TCP/RDMA flows sharing bottleneck links), recomputed whenever a transfer starts or finishes sending
its bytes. The fixed per-transfer latency (``preset.kv_transfer_latency_s``: connection set-up,
completion notification) is added after the last byte and takes no bandwidth. A transfer alone on
both its NICs therefore takes exactly ``preset.kv_transfer_time(tokens)``, as before sharing was
modelled; seven senders into one receiver take about seven times as long as one.

:class:`SharedNics` is the fluid model: :meth:`SharedNics.start` and :meth:`SharedNics.finish_bytes`
return the new schedule of every transfer whose rate changed. :class:`KvTransfers` turns schedules
into events: it versions each transfer's schedule (a rescheduled transfer's older events go stale)
and pushes its landing (and, while it shares a NIC, byte-end) events. A transfer whose NICs carry
nothing else needs no byte-end event: its end changes nobody's rate, so it is retired lazily, the
next time its NICs are looked at. ``KvTransfers`` also keeps the prefill side's KV leases: a
finished prompt's KV waits at most ``kv_lease_timeout_s`` to be pulled.
"""

from __future__ import annotations

import math
from collections import deque

from arrow_rl.cluster.emulator.events import KV_LANDED, LEASE_CHECK, NIC_BYTES_SENT, EventQueue
from arrow_rl.cluster.emulator.requests import QUEUED_FOR_KV
from arrow_rl.perf.preset import Preset

# relative slack when deciding that a transfer has sent all its bytes (float round-off of the
# piecewise-constant rate integration)
_EPS = 1e-9


class SharedNics:
    """The transfers currently sending bytes, their max-min fair rates, and NIC occupancy."""

    __slots__ = ("bandwidth", "latency", "active", "n_out", "n_in")

    def __init__(self, num_instances: int, bandwidth_Bps: float, latency_s: float) -> None:
        self.bandwidth = float(bandwidth_Bps)
        self.latency = float(latency_s)
        # rid -> [src, dst, bytes left at t_upd, t_upd, rate, byte_end]
        self.active: dict[int, list] = {}
        self.n_out = [0] * num_instances     # active transfers sending from each instance
        self.n_in = [0] * num_instances      # active transfers received by each instance

    def copy(self) -> "SharedNics":
        new = SharedNics.__new__(SharedNics)
        new.bandwidth, new.latency = self.bandwidth, self.latency
        new.active = {rid: list(x) for rid, x in self.active.items()}
        new.n_out, new.n_in = list(self.n_out), list(self.n_in)
        return new

    def clear(self) -> None:
        self.active.clear()
        self.n_out = [0] * len(self.n_out)
        self.n_in = [0] * len(self.n_in)

    def remove(self, rid: int) -> None:
        """Forget an active transfer."""
        x = self.active.pop(rid)
        self.n_out[x[0]] -= 1
        self.n_in[x[1]] -= 1

    def discard(self, rid: int) -> None:
        """Forget a transfer (it landed, or the cluster was emptied)."""
        if rid in self.active:
            self.remove(rid)

    def _retire_done(self, t: float) -> None:
        for rid in [rid for rid, x in self.active.items() if t >= x[5]]:
            self.remove(rid)

    def shared(self, rid: int) -> bool:
        """Whether another active transfer uses one of this transfer's NICs."""
        x = self.active[rid]
        return self.n_out[x[0]] > 1 or self.n_in[x[1]] > 1

    def start(self, rid: int, src: int, dst: int, nbytes: float, t: float,
              alone_land: float) -> list[tuple[int, float, float]]:
        """A transfer starts sending at ``t``. Returns ``(rid, byte_end, land)`` for every transfer
        whose schedule changed (this one included). ``alone_land`` is the landing time when no other
        transfer shares its NICs (``t + preset.kv_transfer_time``), used as is in that case so that
        uncontended runs are bit-identical to the unshared model."""
        if self.active:
            self._retire_done(t)
        alone = self.n_out[src] == 0 and self.n_in[dst] == 0
        self.n_out[src] += 1
        self.n_in[dst] += 1
        if alone:
            self.active[rid] = [src, dst, float(nbytes), t, self.bandwidth, alone_land - self.latency]
            return [(rid, alone_land - self.latency, alone_land)]
        self.active[rid] = [src, dst, float(nbytes), t, 0.0, math.inf]
        return self._reshare(t)

    def finish_bytes(self, rid: int, t: float) -> list[tuple[int, float, float]]:
        """A shared transfer sent its last byte at ``t``: free its share for the others (it may
        already have been retired by a transfer that started at the same instant)."""
        if rid in self.active:
            self.remove(rid)
        return self._reshare(t) if self.active else []

    def _reshare(self, t: float) -> list[tuple[int, float, float]]:
        """Bring every active transfer to ``t``, recompute max-min fair rates by progressive
        filling over the egress and ingress links, and return the changed schedules."""
        act = self.active
        for x in act.values():
            left = x[2] - x[4] * (t - x[3])
            x[2] = left if left > 0.0 else 0.0
            x[3] = t
        # links: 2·i is the egress of i, 2·i + 1 its ingress; ``users`` lists each link's transfers
        # in the order of ``active`` (the order links are first met decides ties, as it must)
        users: dict[int, list[int]] = {}
        for rid, x in act.items():
            o = 2 * x[0]
            u = users.get(o)
            if u is None:
                users[o] = [rid]
            else:
                u.append(rid)
            i = 2 * x[1] + 1
            u = users.get(i)
            if u is None:
                users[i] = [rid]
            else:
                u.append(rid)
        bw = self.bandwidth
        cap = dict.fromkeys(users, bw)
        left = {link: len(rids) for link, rids in users.items()}   # transfers without a rate yet
        rate: dict[int, float] = {}
        n_act = len(act)
        while len(rate) < n_act:
            best, best_link = math.inf, None
            for link, n in left.items():
                if n:
                    share = cap[link] / n
                    if share < best:
                        best, best_link = share, link
            for r in users[best_link]:
                if r in rate:
                    continue
                rate[r] = best
                x = act[r]
                o, i = 2 * x[0], 2 * x[1] + 1
                cap[o] -= best
                cap[i] -= best
                left[o] -= 1
                left[i] -= 1
        changed = []
        for rid, x in act.items():
            r = rate[rid]
            if r == x[4] and math.isfinite(x[5]):
                continue
            x[4] = r
            end = t + x[2] / r
            x[5] = end
            changed.append((rid, end, end + self.latency))
        return changed

    def check(self) -> None:
        """Audit: NIC counts match the active transfers; no link carries more than its bandwidth."""
        n_out = [0] * len(self.n_out)
        n_in = [0] * len(self.n_in)
        load_out = [0.0] * len(self.n_out)
        load_in = [0.0] * len(self.n_in)
        for x in self.active.values():
            n_out[x[0]] += 1
            n_in[x[1]] += 1
            load_out[x[0]] += x[4]
            load_in[x[1]] += x[4]
        assert n_out == self.n_out and n_in == self.n_in, "NIC transfer counts drift"
        limit = self.bandwidth * (1 + _EPS)
        assert max(load_out, default=0) <= limit and max(load_in, default=0) <= limit, "NIC over bandwidth"


class KvTransfers:
    """KV transfers as events: their schedules (``SharedNics`` when links are shared, else each
    transfer alone at ``preset.kv_transfer_time``), versions, and the prefill side's KV leases.
    The engine frees and allocates the KV; this class only says when bytes move and leases end."""

    __slots__ = ("preset", "events", "nics", "version", "lease_s", "leases", "lease_check_pending")

    def __init__(self, preset: Preset, num_instances: int, num_requests: int, events: EventQueue,
                 lease_timeout_s: float, link_sharing: bool) -> None:
        self.preset = preset
        self.events = events
        self.nics = SharedNics(num_instances, preset.kv_transfer_bandwidth_Bps,
                               preset.kv_transfer_latency_s) if link_sharing else None
        self.version = [0] * num_requests    # version of each transfer's schedule (events carry it)
        self.lease_s = lease_timeout_s
        # leases in creation order: with one timeout they also expire in this order, so one event
        # (for the oldest lease that may still be pending) covers them all
        self.leases: deque[tuple[float, int]] = deque()
        self.lease_check_pending = False

    def copy(self, events: EventQueue) -> "KvTransfers":
        """A copy that pushes onto ``events`` (the cloned cluster's queue)."""
        new = KvTransfers.__new__(KvTransfers)
        new.preset, new.events, new.lease_s = self.preset, events, self.lease_s
        new.nics = self.nics.copy() if self.nics is not None else None
        new.version = list(self.version)
        new.leases = deque(self.leases)
        new.lease_check_pending = self.lease_check_pending
        return new

    def clear(self) -> None:
        """The cluster was emptied: nothing is in flight, nothing is leased."""
        if self.nics is not None:
            self.nics.clear()
        self.leases.clear()

    def start(self, rid: int, src: int, dst: int, tokens: int, t: float) -> None:
        """``dst`` starts pulling ``rid``'s KV (``tokens`` of prompt) from ``src`` at ``t``."""
        preset = self.preset
        land = t + preset.kv_transfer_time(tokens)
        nics = self.nics
        if nics is None:
            self.events.push(land, KV_LANDED, rid, self.version[rid])
            return
        changed = nics.start(rid, src, dst, tokens * preset.kv_bytes_per_token, t, land)
        if len(changed) == 1 and changed[0][0] == rid and not nics.shared(rid):   # alone on its NICs
            v = self.version[rid] + 1
            self.version[rid] = v
            self.events.push(land, KV_LANDED, rid, v)
        else:
            self._reschedule(changed)

    def bytes_sent(self, rid: int, t: float) -> None:
        """A transfer that shared a NIC sent its last byte at ``t``: the others speed up."""
        self._reschedule(self.nics.finish_bytes(rid, t))

    def _reschedule(self, changed: list[tuple[int, float, float]]) -> None:
        """Push the new landing (and, for transfers sharing a NIC, byte-end) events of transfers
        whose rate changed; their older events become stale by version."""
        nics, version, push = self.nics, self.version, self.events.push
        for rid, byte_end, land in changed:
            v = version[rid] + 1
            version[rid] = v
            push(land, KV_LANDED, rid, v)
            if nics.shared(rid):
                push(byte_end, NIC_BYTES_SENT, rid, v)

    def landed(self, rid: int) -> None:
        """``rid``'s KV arrived: it no longer uses its NICs."""
        nics = self.nics
        if nics is not None and rid in nics.active:
            nics.remove(rid)

    def lease(self, rid: int, t: float) -> None:
        """The prefill side holds ``rid``'s KV from ``t`` until it is pulled, at most the lease
        timeout (vLLM NixlConnector: VLLM_NIXL_ABORT_REQUEST_TIMEOUT, vllm/envs.py, default 480 s)."""
        self.leases.append((t + self.lease_s, rid))
        if not self.lease_check_pending:
            self.lease_check_pending = True
            self.events.push(t + self.lease_s, LEASE_CHECK, 0, 0)

    def due_leases(self, t: float) -> list[int]:
        """The requests whose lease ended by ``t``, oldest first (the engine expires those whose KV
        is still waiting to be pulled, then calls :meth:`schedule_lease_check`)."""
        self.lease_check_pending = False
        leases = self.leases
        due = []
        while leases and leases[0][0] <= t:
            due.append(leases.popleft()[1])
        return due

    def schedule_lease_check(self, state: list[int]) -> None:
        """Forget the leases whose KV was pulled in time; check again at the oldest pending one."""
        leases = self.leases
        while leases and state[leases[0][1]] != QUEUED_FOR_KV:
            leases.popleft()
        if leases:
            self.lease_check_pending = True
            self.events.push(leases[0][0], LEASE_CHECK, 0, 0)
