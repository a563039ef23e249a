"""``--backend ray`` for ``suite run`` and ``evaluate``: the same results as the local process pool,
bit for bit, and a clear line when Ray is not installed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arrow_rl.cli import app

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "tests" / "data" / "ray_suite.yaml"
TIMINGS = {"wall_s", "cpu_s"}


@pytest.fixture(scope="module")
def local_ray():
    """One private 2-CPU Ray for the module (started once: ~5 s), shut down after."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _strip_timings(obj):
    """The JSON without wall/CPU times and the run's execution settings (jobs, backend)."""
    if isinstance(obj, dict):
        return {k: _strip_timings(v) for k, v in obj.items()
                if k not in TIMINGS and k not in ("jobs", "backend")}
    if isinstance(obj, list):
        return [_strip_timings(v) for v in obj]
    return obj


def _suite_json(tmp_path: Path, name: str, *extra: str) -> dict:
    out = tmp_path / f"{name}.json"
    res = CliRunner().invoke(app, ["suite", "run", "--suite", str(SUITE), "--quick",
                                   "--controllers", "arrow,static-tuned,colocated", "--json", str(out), *extra])
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text())


def test_suite_on_ray_matches_the_process_pool_bit_for_bit(local_ray, tmp_path):
    pool = _suite_json(tmp_path, "pool", "--jobs", "2")
    md = tmp_path / "lb.md"
    on_ray = _suite_json(tmp_path, "ray", "--backend", "ray", "--markdown", str(md))
    assert on_ray["settings"]["backend"] == "ray"
    assert "--quick --backend ray --json OUT.json" in md.read_text()  # the leaderboard's command reproduces it
    assert on_ray["settings"]["simulations"] > 0
    # exact equality of every rate, factor, split, interval and count (JSON floats round-trip exactly)
    assert _strip_timings(on_ray) == _strip_timings(pool)
    seeds = pool["scenarios"]["ray-poisson"]["controllers"]["static-tuned"]["seeds"]
    assert len(seeds) == 3 and all(s["rate"] > 0 for s in seeds)


def test_evaluate_on_ray_matches_the_process_pool_bit_for_bit(local_ray, tmp_path):
    def run(name: str, *extra: str) -> dict:
        out = tmp_path / f"{name}.json"
        res = CliRunner().invoke(app, ["evaluate", "--preset", "h100-llama3.1-8b-tp1", "--instances", "3",
                                       "--workload", "azure-code", "--duration", "60", "--slo-ttft", "2",
                                       "--slo-tpot", "0.1", "--controllers", "arrow,static-tuned,colocated",
                                       "--seeds", "3", "--span", "20", "--warmup", "5", "--rel-tol", "0.3",
                                       "--max-evals", "5", "--json", str(out), *extra])
        assert res.exit_code == 0, res.output
        return json.loads(out.read_text())

    pool, on_ray = run("pool", "--jobs", "2"), run("ray", "--backend", "ray")
    assert _strip_timings(on_ray) == _strip_timings(pool)
    (scenario,) = on_ray["scenarios"].values()
    assert scenario["controllers"]["static-tuned"]["best_split_label"]


# Job functions are defined inside the tests: Ray workers cannot import this test module, and
# cloudpickle ships a local function by value.

def test_a_failing_ray_job_stops_the_run_with_its_own_error_and_key(local_ray):
    from arrow_rl.evaluation.ray_backend import run_jobs

    def fails_on_b(name: str) -> str:
        if name == "b":
            raise ValueError("prefix_offsets must be non-decreasing")
        return name

    with pytest.raises(ValueError, match=r"^job b: prefix_offsets must be non-decreasing$"):
        run_jobs(fails_on_b, [("a", ("a",)), ("b", ("b",))],
                 describe_error=lambda key, exc: ValueError(f"job {key}: {exc}"))


def test_ray_jobs_post_progress_back_to_the_driver(local_ray):
    from arrow_rl.evaluation.ray_backend import run_jobs

    def reports(k: int, notify) -> int:  # noqa: ANN001 - the backend's notifier
        notify(k, "start")
        return 2 * k

    seen: list[tuple] = []
    done = run_jobs(reports, [(k, (k,)) for k in range(3)], progress=lambda *item: seen.append(item),
                    notify_arg=True)
    assert done == {0: 0, 1: 2, 2: 4}
    assert sorted(seen) == [(0, "start"), (1, "start"), (2, "start")]


@pytest.mark.parametrize("command", [
    ["suite", "run", "--suite", str(SUITE), "--json", "x.json", "--backend", "ray"],
    ["evaluate", "--preset", "h100-llama3.1-8b-tp1", "--instances", "3", "--workload", "azure-code",
     "--slo-ttft", "2", "--slo-tpot", "0.1", "--backend", "ray"],
    ["tune", "--config", str(ROOT / "tests" / "data" / "tune_smoke.yaml"), "--out", "best.yaml"],
])
def test_backend_ray_without_ray_installed_says_how_to_install(monkeypatch, command):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    res = CliRunner().invoke(app, command)
    assert res.exit_code == 2
    assert 'pip install -e ".[ray]"' in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_unknown_backend_and_stray_address_are_refused():
    res = CliRunner().invoke(app, ["suite", "run", "--suite", str(SUITE), "--json", "x.json", "--backend", "spark"])
    assert res.exit_code == 2 and "--backend must be one of local, ray, got 'spark'" in res.output
    res = CliRunner().invoke(app, ["suite", "run", "--suite", str(SUITE), "--json", "x.json",
                                   "--ray-address", "auto"])
    assert res.exit_code == 2 and "--ray-address needs --backend ray" in res.output
