"""``arrow-rl workload info|generate`` through Typer's test runner (the sub-app alone)."""

import json

import numpy as np
from typer.testing import CliRunner

from arrow_rl.cli.workload import workload_app
from arrow_rl.workload import load_workload

runner = CliRunner()


def test_info_reports_rows_and_rate_of_a_bundled_trace(tmp_path):
    out = tmp_path / "s.json"
    result = runner.invoke(workload_app, ["info", "azure-code", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "8,819 kept of 8,819 read" in result.output
    stats = json.loads(out.read_text())
    assert stats["rows"] == 8819 and round(stats["mean_rate"], 2) == 2.57


def test_info_rate_scale_doubles_the_reported_rate(tmp_path):
    out = tmp_path / "s.json"
    assert runner.invoke(workload_app, ["info", "azure-conv", "--rate-scale", "2", "--json", str(out)]).exit_code == 0
    assert json.loads(out.read_text())["mean_rate"] == np.float64(2 * load_workload("azure-conv").mean_rate)


def test_info_shows_dropped_failures(tmp_path):
    path = tmp_path / "b.csv"  # synthetic BurstGPT-schema rows, one failure
    path.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                    "1,ChatGPT,10,0,10,API log\n2,ChatGPT,10,5,15,API log\n3,GPT-4,7,3,10,API log\n")
    result = runner.invoke(workload_app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "dropped 1 of 3 rows" in result.output


def test_info_bad_row_exits_2_naming_line_and_field(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("arrival_s,input_tokens,output_tokens\n0,1,1\n1,x,1\n")
    result = runner.invoke(workload_app, ["info", str(path)])
    assert result.exit_code == 2
    assert "line 3" in result.output and "input_tokens" in result.output


def test_generate_is_deterministic_for_a_seed(tmp_path):
    args = ["generate", "--kind", "stages", "--stage", "2:30", "--stage", "8:30", "--seed", "4"]
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert runner.invoke(workload_app, args + ["-o", str(a)]).exit_code == 0
    assert runner.invoke(workload_app, args + ["-o", str(b)]).exit_code == 0
    assert a.read_bytes() == b.read_bytes()
    assert load_workload(a).arrival_s.max() < 60


def test_generate_from_spec_file(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("kind: mmpp\nrates: [1, 10]\nmean_dwell_s: [10, 5]\nduration_s: 60\n")
    out = tmp_path / "m.csv"
    result = runner.invoke(workload_app, ["generate", "--spec", str(spec), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert len(load_workload(out)) > 0


def test_generate_invalid_options_exit_2_naming_the_field(tmp_path):
    result = runner.invoke(workload_app, ["generate", "--kind", "gamma", "--rate", "3", "-o", str(tmp_path / "x.csv")])
    assert result.exit_code == 2
    assert "cv" in result.output and "duration_s" in result.output
