"""Branches of the emulator whose future is a given workload, and the past a controller has observed.

``EmulatedCluster.clone()`` keeps the recorded trace, so a branch sees exactly the requests the real
run will: right for a clairvoyant planner, wrong for a deployable one. ``with_future`` makes the
same clone but replaces every request that has not yet reached the engine by a *future* workload
(a forecast). The present is untouched: requests already arrived (queued, prefilling, in transfer,
decoding, finished) keep their rows, ids and state; instances, queues, events, KV and the router are
the clone's. Only rows that no event, queue or router has ever seen are replaced, which is why the
surgery is safe: an unarrived request is ``NEW`` and referenced nowhere but its own row.

``arrived_since`` is the other half: what a router has seen of the past (arrival time and prompt
length of every request that reached the engine), without the output lengths, which a live
controller learns only when a request finishes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from arrow_rl.cluster.emulator.requests import NEW, RequestTable
from arrow_rl.workload.workload import Workload

# The clusters here are ``EmulatedCluster``s, typed ``Any``: cluster.py calls these functions, and the
# layering test counts even a type-only import back to it as an import circle.


def with_future(clone: Any, future: Workload) -> Any:
    """Turn ``clone`` (a fresh ``clone()``, owned by the caller) into a branch whose requests not yet
    arrived are ``future``'s, in its order, with ids following the arrived ones. ``future``'s
    arrival times are absolute (the trace's clock) and must reach the engine no earlier than now,
    so the present stays the present; ``future``'s prefixes are kept only when the run's workload
    carries prefixes of the same block size. Deterministic: no randomness, the result depends only on the clone and ``future``."""
    arrived = clone._next
    frontend_s = clone._frontend_s
    if len(future) and float(future.arrival_s[0]) + frontend_s < clone.now - 1e-9:
        raise ValueError(f"future arrivals must reach the engine at or after now ({clone.now:g} s); "
                         f"the first arrives at {float(future.arrival_s[0]) + frontend_s:g} s")
    old = clone.requests
    # arrivals are taken in row order, so the rows from ``arrived`` on are all NEW (cheap check: the first)
    assert arrived == old.num or old.state[arrived] == NEW, "only requests that have not arrived are replaced"
    workload = _joined(clone.workload, arrived, future)
    table = RequestTable(workload)
    for name in RequestTable._LISTS:   # the arrived rows keep their state; the future rows start NEW
        getattr(table, name)[:arrived] = getattr(old, name)[:arrived]
    table.reject_reason = old.reject_reason
    table.cached_tokens = old.cached_tokens
    clone.workload = workload
    clone.requests = table
    transfers = clone._transfers
    transfers.version = transfers.version[:arrived] + [0] * len(future)
    kv = clone._kv
    kv.workload, kv.requests = workload, table
    kv.keys = {rid: keys for rid, keys in kv.keys.items() if rid < arrived}   # the clone shared this cache
    return clone


def arrived_since(cluster: Any, start: int) -> tuple[list[float], list[int]]:
    """Arrival times and prompt lengths of the requests that reached the engine, from the
    ``start``-th on (arrival order), so a caller can follow arrivals incrementally."""
    requests = cluster.requests
    stop = cluster._next
    return requests.arrival_s[start:stop], requests.input_tokens[start:stop]


def _joined(workload: Workload, arrived: int, future: Workload) -> Workload:
    """The first ``arrived`` rows of ``workload`` followed by every row of ``future`` (``future``'s
    prefixes count only when its blocks are the same size as ``workload``'s)."""
    cols = dict(
        arrival_s=np.concatenate([workload.arrival_s[:arrived], future.arrival_s]),
        input_tokens=np.concatenate([workload.input_tokens[:arrived], future.input_tokens]),
        output_tokens=np.concatenate([workload.output_tokens[:arrived], future.output_tokens]),
        name=f"{workload.name}+forecast", source=workload.source)
    if workload.prefix_hashes is None:
        return Workload(**cols)
    head_end = int(workload.prefix_offsets[arrived])
    hashes, offsets = workload.prefix_hashes[:head_end], workload.prefix_offsets[:arrived + 1]
    if future.prefix_hashes is not None and future.prefix_block_tokens == workload.prefix_block_tokens:
        hashes = np.concatenate([hashes, future.prefix_hashes])
        offsets = np.concatenate([offsets, future.prefix_offsets[1:] + head_end])
    else:
        offsets = np.concatenate([offsets, np.full(len(future), head_end, dtype=np.int64)])
    return Workload(**cols, prefix_hashes=hashes, prefix_offsets=offsets,
                    prefix_block_tokens=workload.prefix_block_tokens)
