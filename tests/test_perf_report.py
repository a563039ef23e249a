"""Fit report against the shipped profile rows (no shared data needed) and the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from arrow_rl.cli import app
from arrow_rl.perf.fit_report import fit_report, load_profile_rows
from arrow_rl.perf.presets import list_presets


@pytest.mark.parametrize("name", list_presets())
def test_median_error_on_profile_rows_within_10_percent(name):
    rep = fit_report(name)
    assert rep.overall_rows >= 200
    assert rep.overall_median_pct <= 10.0


@pytest.mark.parametrize("name", list_presets())
def test_shipped_rows_have_a_token_op_table_and_an_attention_component(name):
    comps = {r["component"] for r in load_profile_rows(name)}
    assert "token_ops" in comps
    assert comps & {"attn_prefill", "attn_decode"}


def test_target_anchors_within_their_ranges():
    for name in list_presets():
        for a in fit_report(name).anchors:
            if a["target"] and a["in_range"] is not None and "a100" not in a["id"]:
                assert a["in_range"], a


def test_kv_transfer_matches_mooncake_within_10_percent():
    for a in fit_report("h100-llama3.1-70b-tp4").anchors:
        if a["id"].startswith("mooncake-kv"):
            assert abs(a["error_pct"]) <= 10.0, a


def test_cli_writes_json(tmp_path):
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["perf-report", "--preset", "a100-llama3-8b-tp1", "--json", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["preset"] == "a100-llama3-8b-tp1"
    assert doc["profile_rows"]["median_abs_pct_error"] <= 10.0
    assert set(doc["arrow_profile"]) >= {"prefill_a", "prefill_b", "prefill_c", "decode_slope", "decode_intercept"}


def test_cli_unknown_preset_names_valid_ones():
    res = CliRunner().invoke(app, ["perf-report", "--preset", "nope"])
    assert res.exit_code == 2
    assert "h100-llama2-7b-tp1" in res.output


def test_cli_plot_writes_png(tmp_path):
    out = tmp_path / "fit.png"
    res = CliRunner().invoke(app, ["perf-report", "--preset", "h100-llama2-7b-tp1", "--plot", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
