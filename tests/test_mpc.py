"""``mpc``: the oracle's lookahead search on a forecast of the recent past, and the emulator branch it
plans on (``EmulatedCluster.clone_with_future``). What is pinned: it never reads the future; a
branch keeps the present exactly; it runs in the evaluation loop and ``arrow-rl evaluate``; it is
deterministic."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from arrow_rl.cluster.emulator import EmulatorConfig
from arrow_rl.controllers.baselines import OracleConfig
from arrow_rl.controllers.forecast import ForecastArrivals, RecentPast
from arrow_rl.controllers.mpc import MpcConfig, MpcController
from arrow_rl.controllers.registry import make_policy
from arrow_rl.evaluation.runner import build_cluster, run_policy
from arrow_rl.evaluation.suite import is_deployable
from arrow_rl.workload.workload import Workload

PRESET = "h100-llama3.1-8b-tp1"
CFG = EmulatorConfig(preset=PRESET, num_instances=4, slo_ttft_s=1.0, slo_tpot_s=0.05)
KNOBS = dict(decision_interval_s=2.0, lookahead_s=6.0)
DIVERGE_S = 20.0


def _poisson(n: int, rate: float, inp: int, out: int, seed: int, t0: float = 0.0):
    rng = np.random.default_rng(seed)
    arrival = t0 + np.cumsum(rng.exponential(1.0 / rate, size=n))
    return arrival, rng.integers(inp // 2, inp * 2, size=n), rng.integers(max(2, out // 2), out * 2, size=n)


def _pasts_alike() -> tuple[Workload, Workload]:
    """Two workloads, the same before ``DIVERGE_S`` (a prefill-heavy burst that makes mpc move),
    different after it (more of the burst, or short prompts with long answers)."""
    a, i, o = _poisson(600, 15.0, 5000, 16, seed=1)
    a2, i2, o2 = _poisson(300, 20.0, 300, 300, seed=2, t0=DIVERGE_S)
    past = a < DIVERGE_S
    return (Workload(a, i, o, name="burst-goes-on"),
            Workload(np.r_[a[past], a2], np.r_[i[past], i2], np.r_[o[past], o2], name="burst-ends"))


class _RecordingPlanner:
    """Wraps a controller's planner and keeps every decision's time, candidate scores and choice."""

    def __init__(self, inner) -> None:
        self.inner, self.log = inner, []

    def rank(self, cluster, candidates, arrivals):
        ranking = self.inner.rank(cluster, candidates, arrivals)
        self.log.append((cluster.now, dict(ranking.scores), ranking.best.key))
        return ranking


def _run(spec: str, workload: Workload, **knobs):
    policy = make_policy(spec, 4, mpc_config=MpcConfig(**{**KNOBS, **knobs}), oracle_config=OracleConfig(**KNOBS))
    policy.controller.planner = _RecordingPlanner(policy.controller.planner)
    result = run_policy(workload, CFG, policy, seed=0)
    return result, policy.controller


def _flips(result, until: float = np.inf) -> list:
    return [(f.time_s, f.instance_id, f.role) for f in result.flips if f.time_s <= until]


@pytest.fixture(scope="module")
def runs():
    a, b = _pasts_alike()
    return {"a": _run("mpc", a), "b": _run("mpc", b), "a_again": _run("mpc", a)}


# ------------------------------------------------------------------------- never the future ----
def test_mpc_decides_alike_until_the_futures_diverge(runs):
    (ra, ca), (rb, cb) = runs["a"], runs["b"]
    before = [d for d in ca.planner.log if d[0] <= DIVERGE_S]
    assert before == [d for d in cb.planner.log if d[0] <= DIVERGE_S]   # every score, not only the choices
    assert _flips(ra, DIVERGE_S) == _flips(rb, DIVERGE_S) != []          # it moved before the divergence
    assert ca.planner.log != cb.planner.log                              # and the futures do differ after


def test_the_clairvoyant_oracle_does_tell_the_same_pasts_apart():
    """The check above has teeth: planning on the recorded trace, the oracle's scores differ before
    the divergence, because it sees it coming."""
    a, b = _pasts_alike()
    (_, oa), (_, ob) = _run("oracle", a), _run("oracle", b)
    assert [d for d in oa.planner.log if d[0] <= DIVERGE_S] != [d for d in ob.planner.log if d[0] <= DIVERGE_S]


# ---------------------------------------------------------------------------- determinism ----
def test_mpc_is_deterministic(runs):
    (ra, ca), (rb, cb) = runs["a"], runs["a_again"]
    assert ra.attainment == rb.attainment and _flips(ra) == _flips(rb)
    assert ca.planner.log == cb.planner.log and ca.evaluations == cb.evaluations > 0


def test_a_wide_margin_holds_the_split():
    a, _ = _pasts_alike()
    result, controller = _run("mpc", a, switch_margin=1e9)
    assert result.flips == [] and controller.holds > 0


# ------------------------------------------------------------------- the emulator's branch ----
def _prefixed(w: Workload) -> Workload:
    return w.with_shared_prefixes(group_id=np.arange(len(w)) % 3, prefix_tokens=np.minimum(w.input_tokens, 512))


def _cluster_at(workload: Workload, t: float):
    cluster = build_cluster(workload, CFG, make_policy("arrow", 4), seed=0)
    cluster.advance(t)
    return cluster


def _rest(workload: Workload, start: int) -> Workload:
    """The workload's rows from ``start`` on, at their own (absolute) times."""
    return Workload(workload.arrival_s[start:], workload.input_tokens[start:], workload.output_tokens[start:],
                    **workload._rows(start, len(workload)))


def _present(cluster) -> tuple:
    """Everything a branch must keep: time, views, queues, resident requests' rows, events, records."""
    n = cluster._next
    rows = tuple(tuple(getattr(cluster.requests, name)[:n]) for name in cluster.requests._LISTS)
    queues = tuple((tuple(i.waiting), tuple(i.prefilling), i.role) for i in cluster._insts)
    return (cluster.now, n, repr(cluster.instances()), queues, rows, sorted(cluster._events.heap),
            repr(cluster.completed()), cluster.requests.reject_reason, cluster.requests.cached_tokens)


@pytest.mark.parametrize("prefixes", [False, True])
def test_a_branch_keeps_the_present_and_with_the_traces_own_future_runs_as_a_clone(prefixes):
    a, _ = _pasts_alike()
    a = _prefixed(a) if prefixes else a
    cluster = _cluster_at(a, 12.3)
    clone, branch = cluster.clone(), cluster.clone_with_future(_rest(a, cluster._next))
    assert _present(branch) == _present(clone)
    for _ in range(3):
        assert repr(branch.advance(5.0)) == repr(clone.advance(5.0))
    assert repr(branch.completed()) == repr(clone.completed())


def test_a_branch_with_another_future_leaves_the_cluster_untouched():
    a, b = _pasts_alike()
    a = _prefixed(a)
    cluster = _cluster_at(a, DIVERGE_S - 0.5)
    n = cluster._next
    control = cluster.clone()
    other = cluster.clone_with_future(_rest(b, n))
    assert _present(other) == _present(control)
    # the future rows follow the arrived ones, ids and all
    assert other.requests.input_tokens == a.input_tokens[:n].tolist() + b.input_tokens[n:].tolist()
    other.advance(15.0)
    assert repr(cluster.advance(15.0)) == repr(control.advance(15.0))


def test_a_future_before_now_is_refused():
    a, _ = _pasts_alike()
    cluster = _cluster_at(a, 5.0)
    with pytest.raises(ValueError, match="at or after now"):
        cluster.clone_with_future(Workload(np.array([1.0]), np.array([10]), np.array([10])))
    empty = cluster.clone_with_future(Workload(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)))
    empty.run_until_done()
    assert empty.done and len(empty.completed()) == cluster._next


# --------------------------------------------------------------------------- the forecast ----
class _Observed:
    """A stand-in cluster: what ``RecentPast`` may read, and nothing else."""

    def __init__(self, now, arrivals, ended) -> None:
        self.now, self._arrivals, self._ended = now, arrivals, ended

    def arrived_since(self, start):
        rows = self._arrivals[start:]
        return [a for a, _ in rows], [p for _, p in rows]

    def ended_since(self, start):
        return self._ended[start:]


def _ended(finish_s, output_tokens, rejected=False):
    return SimpleNamespace(finish_s=finish_s, output_tokens=output_tokens, rejected=rejected)


def test_the_forecast_mirrors_the_past_about_now_and_reflects_it_past_the_observed_span():
    past = RecentPast(history_s=60.0, prior_output_tokens=99)
    past.observe(_Observed(5.0, [(1.0, 100), (2.0, 200), (4.0, 400)], []))
    f = past.forecast(now=5.0, horizon_s=10.0)
    # only 5 s observed: mirrored in (5, 10], then replayed forwards in (10, 15)
    assert f.arrival_s.tolist() == [6.0, 8.0, 9.0, 11.0, 12.0, 14.0]
    assert f.input_tokens.tolist() == [400, 200, 100, 100, 200, 400]
    assert set(f.output_tokens.tolist()) == {99}   # nothing finished yet: the prior


def test_output_lengths_come_only_from_finished_requests_most_recent_first():
    past = RecentPast(history_s=4.0, min_finished=2)
    ended = [_ended(0.5, 7), _ended(1.5, 11), _ended(2.5, 5000, rejected=True), _ended(9.0, 13)]
    past.observe(_Observed(10.0, [(7.0, 10), (8.0, 20), (9.0, 30)], ended))
    assert past.output_pool() == [13, 11]          # the rejected one never; the oldest beyond min_finished dropped
    f = past.forecast(now=10.0, horizon_s=4.0)
    assert f.arrival_s.tolist() == [11.0, 12.0, 13.0] and f.output_tokens.tolist() == [13, 11, 13]


def test_the_forecast_forgets_arrivals_older_than_its_history():
    past = RecentPast(history_s=2.0)
    past.observe(_Observed(10.0, [(1.0, 5), (8.5, 6), (9.5, 7)], []))
    assert past.forecast(now=10.0, horizon_s=1.9).input_tokens.tolist() == [7, 6]
    assert len(RecentPast(history_s=2.0).forecast(now=10.0, horizon_s=5.0)) == 0


# ------------------------------------------------------------------------------- the loop ----
def test_mpc_needs_the_emulators_branches():
    with pytest.raises(TypeError, match="clone_with_future"):
        MpcController().bind_cluster(object())
    with pytest.raises(TypeError, match="clone_with_future"):
        ForecastArrivals.require(SimpleNamespace(clone=lambda: None), "x")
    with pytest.raises(RuntimeError, match="live cluster"):
        MpcController().act(SimpleNamespace(now=0.0, instances=[]))


def test_mpc_is_a_registered_deployable_policy():
    policy = make_policy("mpc", 4)
    assert policy.name == "mpc" and policy.needs_cluster and isinstance(policy.controller, MpcController)
    assert is_deployable("mpc") and not is_deployable("oracle")


def test_mpc_runs_through_arrow_rl_evaluate(tmp_path):
    from typer.testing import CliRunner

    from arrow_rl.cli import app

    rng = np.random.default_rng(1)
    n = 60
    trace = tmp_path / "t.csv"
    Workload(np.cumsum(rng.exponential(1 / 8.0, n)), rng.integers(400, 1600, n), rng.integers(32, 128, n)).to_csv(trace)
    out = tmp_path / "out.json"
    result = CliRunner().invoke(app, [
        "evaluate", "--preset", PRESET, "--instances", "3", "--workload", str(trace), "--slo-ttft", "1",
        "--slo-tpot", "0.05", "--controllers", "arrow,mpc", "--seeds", "3", "--span", "10", "--warmup", "3",
        "--max-evals", "3", "--rel-tol", "0.5", "--jobs", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    (scenario,) = json.loads(out.read_text())["scenarios"].values()
    entry = scenario["controllers"]["mpc"]
    assert len(entry["per_seed"]) == 3 and all(r >= 0 for r in entry["per_seed"])

