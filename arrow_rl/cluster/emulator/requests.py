"""The request table: every request's state and counters, one plain list per field.

A request is a row, not an object: the emulator replays tens of thousands of requests per second of
wall time, and a list per field indexed by request id is both the fastest layout in CPython and
the cheapest to copy for ``EmulatedCluster.clone()`` (a list copy per field, no per-request
objects). The fields are named here once; the engine, scheduler and KV-cache manager read and
write them by request id.

Life cycle (``RequestState``; docs/emulator.md "Code map" draws it)::

    NEW ─arrival→ WAITING ─admitted→ PREFILLING ─prompt done→ DECODING ─last token→ FINISHED
                     ↑  preempted (recompute) ─┘                 │
                     └──────────── preempted ────────────────────┘
    plain (colocated, or placed on a MIXED instance): decodes in place, like a decode leg kept
    on its prefill instance.
    disaggregated, decode leg routed to another instance:
    PREFILLING ─prompt done→ QUEUED_FOR_KV ─KV room on the decode instance→ TRANSFERRING
        ─KV landed→ LANDED ─joins the running batch→ DECODING
    QUEUED_FOR_KV ─KV lease expired→ WAITING (the decode instance recomputes the prompt)
    any resident state ─client timeout / cannot fit / cluster wedged→ REJECTED
"""

from __future__ import annotations

import math
from enum import IntEnum

from arrow_rl.cluster.base import RequestRecord
from arrow_rl.workload.workload import Request, Workload


class RequestState(IntEnum):
    """Where a request is in its life cycle (an ``int`` so that the hot loops compare plain ints)."""

    NEW = 0             # not arrived yet
    WAITING = 1         # queued on ``instance`` for admission (FCFS; preempted requests at the front)
    PREFILLING = 2      # running on ``instance``, its prompt (or recompute) partly computed
    DECODING = 3        # running on ``instance`` in the lazy decode set (one token per iteration)
    QUEUED_FOR_KV = 4   # prompt done; queued on the decode instance until it has KV room to pull
    TRANSFERRING = 5    # its KV is being pulled from ``prefill_instance`` to ``instance``
    LANDED = 6          # the KV arrived; joins the running batch at the next iteration boundary
    FINISHED = 7
    REJECTED = 8


NEW, WAITING, PREFILLING, DECODING, QUEUED_FOR_KV, TRANSFERRING, LANDED, FINISHED, REJECTED = RequestState
ENDED = (FINISHED, REJECTED)

PREFILL_LEG, DECODE_LEG = 0, 1   # values of ``RequestTable.leg``

_new = object.__new__


def make_record(**fields) -> RequestRecord:
    """Build a ``RequestRecord`` (every field given) without the frozen-dataclass ``__init__``,
    which sets each field through ``object.__setattr__`` (one record per request)."""
    r = _new(RequestRecord)
    r.__dict__.update(fields)
    return r


def make_request(request_id: int, arrival_s: float, input_tokens: int, output_tokens: int) -> Request:
    """A ``Request`` for a router, built like ``make_record`` (two per request: both legs)."""
    r = _new(Request)
    r.__dict__.update(request_id=request_id, arrival_s=arrival_s, input_tokens=input_tokens,
                      output_tokens=output_tokens)
    return r


_RECORD_FIELDS = ("request_id", "arrival_s", "input_tokens", "output_tokens", "prefill_instance", "decode_instance",
                  "first_token_s", "finish_s", "prefill_done_s", "cached_tokens", "rejected", "reject_reason",
                  "preemptions")
# the record / request dataclasses are plain (a __dict__, exactly these fields): build them item by item,
# in the order ``make_record`` has always stored them
_plain_records = hasattr(RequestRecord(0, 0.0, 1, 1), "__dict__") and \
    set(RequestRecord.__dataclass_fields__) == set(_RECORD_FIELDS)
_plain_requests = hasattr(Request(0, 0.0, 1, 1), "__dict__") and \
    tuple(Request.__dataclass_fields__) == ("request_id", "arrival_s", "input_tokens", "output_tokens")

if not hasattr(RequestRecord(0, 0.0, 1, 1), "__dict__"):  # pragma: no cover
    make_record = RequestRecord  # noqa: F811  (a slotted RequestRecord: use the plain constructor)
if not hasattr(Request(0, 0.0, 1, 1), "__dict__"):  # pragma: no cover
    make_request = Request  # noqa: F811


class RequestTable:
    """Per-request fields, indexed by request id (the workload's row)."""

    # fields copied by ``copy`` (the workload columns are immutable and shared)
    _LISTS = ("state", "leg", "computed", "generated", "decode_offset", "last_token_iteration", "blocks",
              "source_blocks", "instance", "prefill_instance", "decode_instance", "first_token_s",
              "prefill_done_s", "finish_s", "preemptions", "plain", "queue_order")

    def __init__(self, workload: Workload) -> None:
        n = len(workload)
        self.num = n
        self.arrival_s: list[float] = workload.arrival_s.tolist()
        self.input_tokens: list[int] = workload.input_tokens.tolist()
        self.output_tokens: list[int] = workload.output_tokens.tolist()
        self.state: list[RequestState] = [NEW] * n
        self.leg = [PREFILL_LEG] * n     # PREFILL_LEG until its prompt is done, then DECODE_LEG
        self.computed = [0] * n          # KV tokens computed (outside the lazy decode set)
        self.generated = [0] * n         # output tokens generated so far
        # lazy decode set (instance.py): KV tokens = decode_offset + the instance's decode_iterations;
        # the last token is out when the instance's decode_iterations reaches last_token_iteration
        self.decode_offset = [0] * n
        self.last_token_iteration = [0] * n
        self.blocks = [0] * n            # KV blocks held on ``instance`` (outside the decode set)
        self.source_blocks = [0] * n     # KV blocks still held on the prefill instance until pulled
        self.instance = [-1] * n         # the instance the request lives on now
        self.prefill_instance = [-1] * n
        self.decode_instance = [-1] * n
        self.first_token_s = [math.nan] * n    # the client sees the first token (TTFT ends)
        self.prefill_done_s = [math.nan] * n   # prompt computed on the prefill instance (its own token)
        self.finish_s = [math.nan] * n
        self.preemptions = [0] * n
        # served whole where its prompt was placed (colocated mode, or routed to a MIXED instance):
        # set at arrival and kept through flips (Arrow §5.2: admitted work finishes where it is)
        self.plain = [False] * n
        # place in its instance's waiting line (``InstanceState.queue_order_back``): waiting prompts
        # and decode legs queued for KV room are served in this one FCFS order
        self.queue_order = [0] * n
        self.reject_reason: dict[int, str] = {}
        self.cached_tokens: dict[int, int] = {}   # prompt tokens found in a prefix cache at first admission

    def copy(self) -> "RequestTable":
        new = RequestTable.__new__(RequestTable)
        new.__dict__.update(self.__dict__)
        for name in self._LISTS:
            setattr(new, name, list(getattr(self, name)))
        new.reject_reason = dict(self.reject_reason)
        new.cached_tokens = dict(self.cached_tokens)
        return new

    def record(self, rid: int) -> RequestRecord:
        """The request's ``RequestRecord`` as of now (unended requests have NaN times)."""
        if _plain_records:   # ``make_record`` with its fields stored one by one (one record per request)
            r = _new(RequestRecord)
            d = r.__dict__
            self._put_request_fields(d, rid)
            d["prefill_instance"] = self.prefill_instance[rid]
            d["decode_instance"] = self.decode_instance[rid]
            d["first_token_s"] = self.first_token_s[rid]
            d["finish_s"] = self.finish_s[rid]
            d["prefill_done_s"] = self.prefill_done_s[rid]
            d["cached_tokens"] = self.cached_tokens.get(rid, 0)
            d["rejected"] = self.state[rid] == REJECTED
            d["reject_reason"] = self.reject_reason.get(rid, "")
            d["preemptions"] = self.preemptions[rid]
            return r
        return make_record(
            request_id=rid, arrival_s=self.arrival_s[rid], input_tokens=self.input_tokens[rid],
            output_tokens=self.output_tokens[rid], prefill_instance=self.prefill_instance[rid],
            decode_instance=self.decode_instance[rid], first_token_s=self.first_token_s[rid],
            finish_s=self.finish_s[rid], prefill_done_s=self.prefill_done_s[rid],
            cached_tokens=self.cached_tokens.get(rid, 0), rejected=self.state[rid] == REJECTED,
            reject_reason=self.reject_reason.get(rid, ""), preemptions=self.preemptions[rid])

    def router_request(self, rid: int) -> Request:
        """The request as a router sees it (each leg is routed once)."""
        if _plain_requests:
            r = _new(Request)
            self._put_request_fields(r.__dict__, rid)
            return r
        return make_request(rid, self.arrival_s[rid], self.input_tokens[rid], self.output_tokens[rid])

    def _put_request_fields(self, d: dict, rid: int) -> None:
        """Store the ``Request`` fields of ``rid`` in ``d``, a plain ``Request``'s or
        ``RequestRecord``'s ``__dict__`` (both begin with them, in this order)."""
        d["request_id"] = rid
        d["arrival_s"] = self.arrival_s[rid]
        d["input_tokens"] = self.input_tokens[rid]
        d["output_tokens"] = self.output_tokens[rid]
