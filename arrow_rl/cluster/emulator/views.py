"""What routers see of an instance: ``InstanceView`` snapshots, cached until the instance changes.

Routers ask for every instance's view at every routing decision (two per request), so views are the
emulator's hottest allocation. Each instance caches its last view with the number of iterations of
its decode run that view reflects (``InstanceState.cached_view``); every mutation of the instance
clears the cache, and a decode run in progress invalidates it only when it completes another
iteration (``decode_run.iterations_done_by``).

While a router places a prompt (and no instance is MIXED) the engine hands out ``LazyView``s
(``views_at`` with a ``lazy_role``, a fast path: fastpath.py): a DECODE instance in the middle of a decode run whose
iterations done by now are not known yet gets a view whose two costly fields, ``decode_tokens`` and
``kv_used_tokens``, are computed on first read; a router that reads only the prefill pool's loads
(Arrow's prefill routing) skips them. When the decision ends, and before any state changes, the
engine settles them (``settle``): a view still referenced outside the engine is completed and
becomes a plain ``InstanceView`` with exactly the values ``views_at`` would have given; the others
are dropped unread.
"""

from __future__ import annotations

import sys

from arrow_rl.cluster.base import InstanceView, Role
from arrow_rl.cluster.emulator.decode_run import iterations_done_by
from arrow_rl.cluster.emulator.instance import DECODE_RUN, InstanceState

_new = object.__new__
# ``fresh_view`` and ``_lazy_view`` fill a view's ``__dict__``: the dataclass must be plain (not slotted)
assert hasattr(InstanceView(0, Role.PREFILL, 0, 0, 0.0, 0, 0, 0, 1), "__dict__"), "InstanceView must not be slotted"


def fresh_view(inst: InstanceState, it: int, healthy: bool) -> InstanceView:
    """The view of ``inst`` after ``it`` decode iterations, computed from its sums (no cache).

    Built without the frozen-dataclass ``__init__`` (which sets each field through
    ``object.__setattr__``): its ``__dict__`` is filled item by item, in field order (faster than
    ``update`` with keywords, which builds a second dict)."""
    n = inst.num_decoding
    if n:
        dec_tok = inst.decode_offset_sum + n * (it + 1) + inst.decode_legs_waiting_tokens
        kv = inst.other_blocks + (
            inst.decode_blocks_memo if it == inst.decode_blocks_memo_at else inst.decode_set_blocks(it))
    else:
        dec_tok = inst.decode_legs_waiting_tokens
        kv = inst.other_blocks
    bs = inst.block_size
    v = _new(InstanceView)
    d = v.__dict__
    d["instance_id"] = inst.id
    d["role"] = inst.role
    d["num_prefill"] = inst.prefill_legs
    d["prefill_tokens"] = inst.prefill_tokens_left
    d["prefill_tokens_sq"] = float(inst.prefill_tokens_left_sq)
    d["num_decode"] = n + inst.decode_legs_waiting
    d["decode_tokens"] = dec_tok
    d["kv_used_tokens"] = kv * bs
    d["kv_capacity_tokens"] = inst.capacity_blocks * bs
    d["healthy"] = healthy
    return v


def view_at(inst: InstanceState, t: float) -> InstanceView:
    """The instance as routers see it at ``t`` (cached; ``views_at`` inlines the same steps)."""
    k = 0
    if inst.plan == DECODE_RUN and t > inst.plan_start:
        k = iterations_done_by(inst, t)
    healthy = t >= inst.blocked_until
    vc = inst.cached_view
    if vc is not None and vc[0] == k and vc[1].healthy == healthy:
        return vc[1]
    v = fresh_view(inst, inst.decode_iterations + k, healthy)
    inst.cached_view = (k, v)
    return v


def views_at(insts: list[InstanceState], t: float, pending: list[LazyView] | None = None,
             lazy_role: Role | None = None) -> list[InstanceView]:
    """Every instance's view at ``t``: ``view_at`` with the memo hits of ``iterations_done_by``
    inlined (routers call this for every request leg; same answers).

    For a routing decision (module docstring) an instance of role ``lazy_role`` in the middle of a
    decode run whose iterations done by ``t`` are not known yet gets a ``LazyView`` instead,
    appended to ``pending`` for ``settle``. The engine passes the role whose loads the decision is
    least likely to read (DECODE when a prompt is placed): completing a lazy view costs more than
    building it eagerly."""
    out = []
    append = out.append
    for inst in insts:
        k = 0
        if inst.plan == DECODE_RUN and t > inst.plan_start:
            if t >= inst.plan_end:
                k = inst.plan_iterations
            elif inst.done_memo_version == inst.plan_version and \
                    inst.done_memo_from <= t - inst.plan_start < inst.done_memo_until:
                k = inst.done_memo_iterations
            elif inst.role is lazy_role:
                append(_lazy_view(inst, t, pending))
                continue
            else:
                k = iterations_done_by(inst, t)
        healthy = t >= inst.blocked_until
        vc = inst.cached_view
        if vc is not None and vc[0] == k and vc[1].healthy == healthy:
            append(vc[1])
            continue
        v = fresh_view(inst, inst.decode_iterations + k, healthy)
        inst.cached_view = (k, v)
        append(v)
    return out


_set = object.__setattr__
_refcount = getattr(sys, "getrefcount", None)
_LAZY = "_lazy_source"
# ``settle`` tells kept views from dropped ones by their reference count: exact under CPython with
# the GIL; elsewhere (PyPy, free-threaded builds) the engine hands out plain views only
LAZY_SUPPORTED = _refcount is not None and getattr(sys, "_is_gil_enabled", lambda: True)() \
    and sys.implementation.name == "cpython"


class LazyView(InstanceView):
    """An ``InstanceView`` of one routing decision whose ``decode_tokens`` and ``kv_used_tokens``
    are computed on first read (module docstring). Until then its ``__dict__`` holds the instance
    and time it describes under ``_lazy_source``."""

    def __getattr__(self, name: str):
        # only called for attributes not in __dict__: the two lazy fields (or a genuine miss)
        if name in ("decode_tokens", "kv_used_tokens") and _LAZY in self.__dict__:
            complete(self)
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # Everything else that looks at the whole view completes it first, then acts as the plain
    # ``InstanceView`` it has become: equality and hashing with plain views (a subclass's reflected
    # ``__eq__`` is tried first), repr, copies and pickles (a copy must not carry the instance
    # reference out of the decision).
    def __eq__(self, other):
        if _LAZY in self.__dict__:
            complete(self)
        return self == other

    def __hash__(self):
        if _LAZY in self.__dict__:
            complete(self)
        return hash(self)

    def __repr__(self):
        if _LAZY in self.__dict__:
            complete(self)
        return repr(self)

    def __reduce_ex__(self, protocol):
        if _LAZY in self.__dict__:
            complete(self)
        return self.__reduce_ex__(protocol)


def _lazy_view(inst: InstanceState, t: float, pending: list[LazyView]) -> LazyView:
    """A ``LazyView`` of ``inst`` at ``t``: every field but the two lazy ones, in field order (the
    same stores as ``fresh_view``'s: a helper shared by both would cost a call per view built)."""
    v = _new(LazyView)
    d = v.__dict__
    d["instance_id"] = inst.id
    d["role"] = inst.role
    d["num_prefill"] = inst.prefill_legs
    d["prefill_tokens"] = inst.prefill_tokens_left
    d["prefill_tokens_sq"] = float(inst.prefill_tokens_left_sq)
    d["num_decode"] = inst.num_decoding + inst.decode_legs_waiting
    d["kv_capacity_tokens"] = inst.capacity_blocks * inst.block_size
    d["healthy"] = t >= inst.blocked_until
    d[_LAZY] = (inst, t)
    pending.append(v)
    return v


def complete(v: LazyView) -> None:
    """Fill a lazy view's two fields from its instance (unchanged since the view was made) and
    turn it into a plain ``InstanceView``, equal field for field to the one ``views_at`` would
    have built then."""
    d = v.__dict__
    inst, t = d[_LAZY]
    k = iterations_done_by(inst, t) if inst.plan == DECODE_RUN and t > inst.plan_start else 0
    _set(v, "__dict__", fresh_view(inst, inst.decode_iterations + k, d["healthy"]).__dict__)
    _set(v, "__class__", InstanceView)
    if inst.cached_view is None:
        inst.cached_view = (k, v)


def settle(pending: list[LazyView]) -> None:
    """End of a routing decision, before any state changes: complete the lazy views anything
    outside the engine still references (the router kept them), drop the others."""
    for v in pending:
        # references: ``pending``, the loop variable and getrefcount's argument
        if _refcount(v) > 3 and _LAZY in v.__dict__:
            complete(v)
    pending.clear()
