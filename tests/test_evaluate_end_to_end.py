"""The control loop, the evaluator and ``arrow-rl evaluate`` on the real emulator, kept to seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from arrow_rl.cluster.base import Role
from arrow_rl.controllers.registry import make_policy
from arrow_rl.evaluation.runner import last_useful_time, run_policy, slo_of
from arrow_rl.workload.workload import Workload

from arrow_rl.cluster.emulator import EmulatorConfig

PRESET = "h100-llama3.1-8b-tp1"


def small_config(n: int = 4, ttft: float = 1.0, tpot: float = 0.05) -> EmulatorConfig:
    return EmulatorConfig(preset=PRESET, num_instances=n, slo_ttft_s=ttft, slo_tpot_s=tpot)


def poisson_workload(n: int = 150, rate: float = 8.0, inp: int = 800, out: int = 64, seed: int = 1) -> Workload:
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / rate, size=n))
    arrival -= arrival[0]
    inputs = rng.integers(inp // 2, inp * 2, size=n)
    outputs = rng.integers(max(2, out // 2), out * 2, size=n)
    return Workload(arrival, inputs, outputs, name="poisson")


def prefill_burst() -> Workload:
    """Long prompts arriving together: far more prefill work than half the cluster can do in SLO."""
    n = 120
    return Workload(np.linspace(0.0, 3.0, n), np.full(n, 6000), np.full(n, 8), name="prefill-burst")


def test_runner_accounts_for_every_request_and_scores_in_unit_interval():
    wl = poisson_workload()
    res = run_policy(wl, small_config(), make_policy("arrow", 4))
    assert res.num_requests == len(wl)
    assert len({r.request_id for r in res.records}) == len(res.records) <= len(wl)
    assert 0.0 <= res.attainment <= min(res.ttft_attainment, res.tpot_attainment) <= 1.0


def test_runner_is_deterministic_for_a_seed():
    wl = poisson_workload()
    a = run_policy(wl, small_config(), make_policy("arrow", 4), seed=3)
    b = run_policy(wl, small_config(), make_policy("arrow", 4), seed=3)
    assert a.attainment == b.attainment
    assert [(f.time_s, f.instance_id, f.role) for f in a.flips] == [(f.time_s, f.instance_id, f.role) for f in b.flips]


def test_runner_static_split_never_flips():
    res = run_policy(poisson_workload(), small_config(), make_policy("static:1", 4), record_timeline=True)
    assert res.flips == [] and {p.num_prefill for p in res.timeline} == {1}


def test_runner_stops_at_the_last_time_an_slo_can_still_be_met():
    wl = poisson_workload()
    res = run_policy(wl, small_config(), make_policy("static:1", 4))
    assert res.sim_end_s <= last_useful_time(wl, slo_of(small_config())) + 1e-6


def test_event_driven_arrow_flips_decode_to_prefill_under_a_prefill_burst():
    res = run_policy(prefill_burst(), small_config(ttft=2.0), make_policy("arrow", 4))
    assert any(f.role == Role.PREFILL.value and f.source == "alg1" for f in res.flips)


def test_interval_arrow_flips_decode_to_prefill_under_a_prefill_burst():
    res = run_policy(prefill_burst(), small_config(ttft=2.0), make_policy("arrow-interval", 4))
    assert any(f.role == Role.PREFILL.value and f.source == "controller" for f in res.flips)


def test_more_prefill_instances_help_a_prefill_burst():
    wl = prefill_burst()
    one = run_policy(wl, small_config(ttft=2.0), make_policy("static:1", 4)).ttft_attainment
    three = run_policy(wl, small_config(ttft=2.0), make_policy("static:3", 4)).ttft_attainment
    assert three > one


def test_colocated_and_dynamo_and_oracle_run_in_the_same_loop():
    wl = poisson_workload(n=60)
    for spec in ("colocated", "dynamo", "oracle"):
        res = run_policy(wl, small_config(), make_policy(spec, 4))
        assert 0.0 <= res.attainment <= 1.0, spec


SMALL_PROTOCOL = ["--seeds", "3", "--span", "20", "--warmup", "5", "--max-evals", "4", "--rel-tol", "0.3"]


def test_evaluate_cli_writes_the_suite_json_and_both_plots(tmp_path):
    from typer.testing import CliRunner

    from arrow_rl.cli import app

    trace = tmp_path / "t.csv"
    poisson_workload(n=80).to_csv(trace)
    out = tmp_path / "out.json"
    result = CliRunner().invoke(app, [
        "evaluate", "--preset", PRESET, "--instances", "3", "--workload", str(trace), "--slo-ttft", "1",
        "--slo-tpot", "0.05", "--controllers", "arrow,static-tuned,colocated", *SMALL_PROTOCOL, "--jobs", "1",
        "--json", str(out), "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    (scenario,) = data["scenarios"].values()
    assert set(scenario["controllers"]) == {"arrow", "static-tuned", "colocated"}
    for entry in scenario["controllers"].values():
        assert len(entry["per_seed"]) == 3 and all(r >= 0 for r in entry["per_seed"]) and "flips_per_min" in entry
        assert all(0.0 <= a <= 1.0 for seed in entry["seeds"] for a in seed["points"].values())
    assert scenario["controllers"]["static-tuned"]["best_split_label"]
    assert data["settings"]["workload"] == str(trace)
    assert (tmp_path / "plots" / "attainment_vs_rate.png").stat().st_size > 0
    assert (tmp_path / "plots" / "suite_serving_rate.png").stat().st_size > 0


def test_evaluate_cli_unknown_controller_is_a_clear_error(tmp_path):
    from typer.testing import CliRunner

    from arrow_rl.cli import app

    trace = tmp_path / "t.csv"
    poisson_workload(n=20).to_csv(trace)
    result = CliRunner().invoke(app, [
        "evaluate", "--preset", PRESET, "--instances", "3", "--workload", str(trace), "--slo-ttft", "1",
        "--slo-tpot", "0.05", "--controllers", "arrow,bogus"])
    assert result.exit_code == 2 and "unknown controller 'bogus'" in result.output


def test_parallel_evaluation_matches_serial():
    """The job loop's worker processes return what one process computes, bit for bit."""
    from arrow_rl.evaluation.protocol import Protocol
    from arrow_rl.evaluation.suite import run_suite
    from arrow_rl.evaluation.suite_spec import one_scenario_suite

    protocol = Protocol(warmup_s=2, span_s=10, seeds=(0, 1, 2), max_evals=3, rel_tol=0.5)
    suite = one_scenario_suite(poisson_workload(n=60), small_config(3), "poisson", protocol)
    serial = run_suite(suite, ["static:1", "static:2"], jobs=1).to_json()
    parallel = run_suite(suite, ["static:1", "static:2"], jobs=2).to_json()
    for name in ("static:1", "static:2"):
        s, p = ((r["scenarios"]["poisson-x3"]["controllers"][name]) for r in (serial, parallel))
        assert s["per_seed"] == p["per_seed"] and s["seeds"] == p["seeds"]


def test_evaluate_cli_scale_mode_records_its_protocol(tmp_path):
    """``--rate-mode scale`` (Arrow §6.1's timestamp division) runs through the suite's protocol."""
    from typer.testing import CliRunner

    from arrow_rl.cli import app

    trace = tmp_path / "t.csv"
    poisson_workload(n=80).to_csv(trace)
    out = tmp_path / "out.json"
    result = CliRunner().invoke(app, [
        "evaluate", "--preset", PRESET, "--instances", "3", "--workload", str(trace), "--slo-ttft", "1",
        "--slo-tpot", "0.05", "--controllers", "static:2", "--rate-mode", "scale", "--warmup", "0", "--seeds", "3",
        "--max-evals", "4", "--rel-tol", "0.3", "--json", str(out)])
    assert result.exit_code == 0, result.output
    (scenario,) = json.loads(out.read_text())["scenarios"].values()
    assert scenario["protocol"]["rate_mode"] == "scale" and scenario["protocol"]["warmup_s"] == 0
    assert scenario["controllers"]["static:2"]["serving_rate"] > 0


def test_evaluate_cli_rejects_unknown_rate_mode(tmp_path):
    from typer.testing import CliRunner

    from arrow_rl.cli import app

    trace = tmp_path / "t.csv"
    poisson_workload(n=20).to_csv(trace)
    result = CliRunner().invoke(app, [
        "evaluate", "--preset", PRESET, "--instances", "3", "--workload", str(trace), "--slo-ttft", "1",
        "--slo-tpot", "0.05", "--controllers", "static:2", "--rate-mode", "squash"])
    assert result.exit_code == 2 and "--rate-mode must be scale or superpose" in result.output


def test_evaluate_uses_the_suite_protocol(tmp_path):
    """The first command a user runs measures as the leaderboard does: warm-up, superposed copies,
    independent seeds, interpolated crossings, paired ratios; the paper's names are refused with
    the suite's replacements named."""
    from typer.testing import CliRunner

    from arrow_rl.cli import app

    out = tmp_path / "e.json"
    args = ["evaluate", "--preset", PRESET, "--instances", "3", "--workload", "azure-code", "--duration", "300",
            "--slo-ttft", "2", "--slo-tpot", "0.1", "--seeds", "3", "--span", "30", "--warmup", "10",
            "--rel-tol", "0.3", "--max-evals", "6"]
    result = CliRunner().invoke(app, [*args, "--controllers", "arrow,colocated", "--json", str(out),
                                      "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    (scenario,) = data["scenarios"].values()
    col = scenario["controllers"]["colocated"]
    assert len(col["per_seed"]) == len(col["brackets"]) == 3 and set(col["paired"]["arrow"]) >= {"ratio", "ci95", "verdict"}
    assert scenario["protocol"]["rate_mode"] == "superpose" and scenario["protocol"]["warmup_s"] == 10
    assert (tmp_path / "plots" / "attainment_vs_rate.png").stat().st_size > 0
    assert "Paired ratio to Arrow" in result.output
    bad = CliRunner().invoke(app, [*args, "--controllers", "arrow,static-best"])
    assert bad.exit_code == 2 and "static-tuned" in bad.output
    bad = CliRunner().invoke(app, [*args, "--protocol", "paper"])
    assert bad.exit_code == 2 and "No such option" in bad.output
