"""The emulator's fast paths give exactly what the reference path gives (fastpath.py).

The golden set (test_emulator_golden.py) pins whole runs on both paths; these tests aim at the
corners of the lazy views a router gets while it places a prompt (views.py): views the router
keeps past its decision, copies, flips in the middle of a decision."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from arrow_rl.cluster.base import InstanceView, Role
from arrow_rl.cluster.emulator import EmulatedCluster, EmulatorConfig, fastpath
from arrow_rl.cluster.emulator.views import LazyView, views_at
from arrow_rl.routing.simple import LeastLoadedRouter
from arrow_rl.workload.workload import Workload

PRESET = "h100-llama3.1-8b-tp1"


@pytest.fixture(autouse=True)
def _fast_paths_on(monkeypatch):
    """These tests aim at the fast paths: on, even in a run with ARROW_EMULATOR_REFERENCE=1."""
    monkeypatch.setattr(fastpath, "ENABLED", True)


def _workload(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return Workload(np.cumsum(rng.exponential(0.02, n)), rng.integers(50, 2000, n), rng.integers(20, 400, n))


class Keeper(LeastLoadedRouter):
    """Least-loaded choices (through views: a subclass gets no fast routing), keeping every view
    it was given with the values the reference path computes at that moment."""

    name = "keeper"

    def __init__(self, copies=False, flip_every=0):
        self.kept = []
        self.copies = copies
        self.flip_every = flip_every
        self.calls = 0
        self.lazy = 0

    def route_prefill(self, request, ctx):
        self.calls += 1
        views = ctx.instances()
        self.lazy += sum(isinstance(v, LazyView) for v in views)
        expected = [InstanceView(**{f: getattr(e, f) for f in InstanceView.__dataclass_fields__})
                     for e in views_at(ctx._insts, ctx.now)]
        if self.flip_every and self.calls % self.flip_every == 0:
            i = self.calls % len(views)
            ctx.flip(i, Role.PREFILL if views[i].role is Role.DECODE else Role.DECODE)
        kept = [copy.copy(v) for v in views] if self.copies else views
        self.kept.append((kept, expected))
        return super().route_prefill(request, ctx)


def _run(router, **kw):
    cfg = EmulatorConfig(preset=PRESET, num_instances=6, mode="disaggregated", num_prefill=2, **kw)
    c = EmulatedCluster(_workload(), cfg, router=router)
    while not c.done:
        c.advance(0.5)
    return c


@pytest.mark.parametrize("copies", [False, True])
def test_views_a_router_keeps_past_its_decision_hold_the_values_of_that_moment(copies):
    r = Keeper(copies=copies)
    _run(r)
    lazy_seen = 0
    for kept, expected in r.kept:
        for v, e in zip(kept, expected):
            assert type(v) is InstanceView      # completed when the decision ended
            assert v == e and repr(v) == repr(e)
            assert list(v.__dict__) == list(e.__dict__)
    assert r.kept
    assert r.lazy > 100   # the run did hand out lazy views (decode instances in the middle of runs)


def test_a_flip_in_the_middle_of_a_decision_does_not_change_the_views_taken_before_it():
    r = Keeper(flip_every=7)
    c = _run(r, flip_delay_s=0.2)
    assert len(c.flips) > 10 and r.lazy > 100
    for kept, expected in r.kept:
        assert kept == expected


def test_lazy_views_complete_on_read_copy_and_pickle():
    cfg = EmulatorConfig(preset=PRESET, num_instances=4, mode="disaggregated", num_prefill=2)
    got = []
    compared = []

    class Probe(LeastLoadedRouter):
        name = "probe"

        def route_prefill(self, request, ctx):
            views = ctx.instances()
            lazy = [v for v in views if isinstance(v, LazyView)]
            if lazy and len(got) < 3:
                ref = views_at(ctx._insts, ctx.now)
                v = lazy[0]
                i = v.instance_id
                kind = len(got)
                if kind == 0:
                    got.append((v.decode_tokens, ref[i].decode_tokens))
                elif kind == 1:
                    got.append((pickle.loads(pickle.dumps(v)), ref[i]))
                else:
                    got.append((copy.deepcopy(v), ref[i]))
            if len(lazy) > 1 and "__dict__" in dir(lazy[-1]) and "_lazy_source" in lazy[-1].__dict__:
                # compared, hashed or printed beside plain views, a lazy view is a plain view
                w = lazy[-1]
                r = views_at(ctx._insts, ctx.now)[w.instance_id]
                assert (r == w) and (w == r) and hash(w) == hash(r) and repr(w) == repr(r)
                compared.append(w)
            return super().route_prefill(request, ctx)

    c = EmulatedCluster(_workload(400, 1), cfg, router=Probe())
    c.run_until_done()
    assert len(got) == 3 and compared
    for a, b in got:
        assert a == b
    assert type(got[1][0]) is InstanceView and type(got[2][0]) is InstanceView


def test_the_reference_path_hands_out_plain_views(monkeypatch):
    monkeypatch.setattr(fastpath, "ENABLED", False)
    seen = set()

    class Types(LeastLoadedRouter):
        name = "types"

        def route_prefill(self, request, ctx):
            seen.update(type(v) for v in ctx.instances())
            return super().route_prefill(request, ctx)

    _run(Types())
    assert seen == {InstanceView}


def test_a_clone_made_by_a_router_mid_decision_hands_out_plain_views():
    seen = []

    class Cloner(LeastLoadedRouter):
        name = "cloner"
        inside = False   # the twins' routers (copies made inside) do not clone again

        def route_prefill(self, request, ctx):
            ctx.instances()
            if not self.inside and len(seen) < 40:
                self.inside = True
                twin = ctx.clone()
                seen.extend(type(v) for v in twin.instances())
                twin.advance(0.5)
                self.inside = False
            return super().route_prefill(request, ctx)

    cfg = EmulatorConfig(preset=PRESET, num_instances=4, mode="disaggregated", num_prefill=2)
    c = EmulatedCluster(_workload(60, 2), cfg, router=Cloner())
    c.run_until_done()
    assert seen and set(seen) == {InstanceView}
