"""``arrow-rl simulate``: the external contract (options, JSON keys) and clear input errors."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from arrow_rl.cli import app
from arrow_rl.workload.workload import Workload

runner = CliRunner()
KEYS = ["ttft_mean", "ttft_p50", "ttft_p90", "ttft_p99", "tpot_mean", "tpot_p50", "tpot_p90", "tpot_p99",
        "e2e_mean", "e2e_p50", "e2e_p90", "e2e_p99", "num_requests", "num_finished", "slo_attainment",
        "wall_seconds"]


def trace(tmp_path, n=200):
    rng = np.random.default_rng(0)
    path = tmp_path / "trace.csv"
    Workload(np.cumsum(rng.exponential(0.05, n)), rng.integers(10, 2000, n), rng.integers(1, 200, n)).to_csv(path)
    return path


def test_simulate_writes_the_contract_keys(tmp_path):
    out = tmp_path / "out.json"
    res = runner.invoke(app, ["simulate", "--preset", "h100-llama3.1-8b-tp1", "--instances", "4",
                              "--mode", "disaggregated", "--prefill-instances", "1",
                              "--max-num-batched-tokens", "1024", "--max-num-seqs", "64",
                              "--workload", str(trace(tmp_path)), "--rate-scale", "2",
                              "--slo-ttft", "1", "--slo-tpot", "0.05", "--seed", "3", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    for key in KEYS:
        assert key in data, key
    assert data["num_requests"] == data["num_finished"] == 200
    assert 0.0 <= data["slo_attainment"] <= 1.0
    assert "TTFT" in res.output and "SLO attainment" in res.output


def test_simulate_accepts_a_cluster_yaml(tmp_path):
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text("preset: h100-llama3.1-8b-tp1\nnum_instances: 2\nmode: colocated\n")
    out = tmp_path / "o.json"
    res = runner.invoke(app, ["simulate", "--config", str(cfg), "--workload", str(trace(tmp_path, 50)),
                              "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["mode"] == "colocated" and data["num_finished"] == 50 and "slo_attainment" not in data


def test_bad_inputs_are_clear_errors_naming_the_option(tmp_path):
    wl = str(trace(tmp_path, 10))
    base = ["simulate", "--preset", "h100-llama3.1-8b-tp1", "--instances", "2", "--workload", wl]
    cases = [
        (["--mode", "sideways"], "--mode"),
        (["--rate-scale", "0"], "--rate-scale"),
        (["--slo-ttft", "1"], "--slo-tpot"),
        (["--router", "magic"], "--router"),
        (["--max-num-seqs", "0"], "--max-num-seqs"),
    ]
    for extra, needle in cases:
        res = runner.invoke(app, base + extra)
        assert res.exit_code != 0 and needle in res.output and "Traceback" not in res.output, (extra, res.output)
    res = runner.invoke(app, ["simulate", "--preset", "nope", "--instances", "2", "--workload", wl])
    assert res.exit_code == 2 and "--preset" in res.output
    res = runner.invoke(app, base[:-1] + [str(tmp_path / "missing.csv")])
    assert res.exit_code == 2 and "missing.csv" in res.output
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,input_tokens,output_tokens\n0.0,10,5\n0.1,abc,5\n")
    res = runner.invoke(app, base[:-1] + [str(bad)])
    assert res.exit_code == 2 and "bad.csv" in res.output and "Traceback" not in res.output
    cfg = tmp_path / "c.yaml"
    cfg.write_text("preset: h100-llama3.1-8b-tp1\nnum_instances: zero\n")
    res = runner.invoke(app, ["simulate", "--config", str(cfg), "--workload", wl])
    assert res.exit_code == 2 and "c.yaml" in res.output and "num_instances" in res.output


def test_simulate_writes_a_plot(tmp_path):
    png = tmp_path / "p.png"
    res = runner.invoke(app, ["simulate", "--preset", "h100-llama3.1-8b-tp1", "--instances", "2",
                              "--mode", "colocated", "--workload", str(trace(tmp_path, 60)),
                              "--slo-ttft", "1", "--slo-tpot", "0.05", "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
