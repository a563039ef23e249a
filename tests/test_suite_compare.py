"""``arrow-rl suite compare``: the model-selection rule on a saved suite result (docs/leaderboard.json)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arrow_rl.cli import app
from arrow_rl.evaluation.compare import compare
from arrow_rl.evaluation.suite import result_from_json
from arrow_rl.evaluation.suite_spec import load_suite

LEADERBOARD = Path(__file__).resolve().parents[1] / "docs" / "leaderboard.json"
DEFAULT = "agents/checkpoints/default"


def _payload() -> dict:
    return json.loads(LEADERBOARD.read_text())


def _result(payload: dict):
    return result_from_json(payload, load_suite(payload["suite"], quick=payload["quick"]))


def _with_candidate(payload: dict, factor_by_split: dict[str, float]) -> dict:
    """A copy with controller ``cand``: the shipped default's per-seed rates times a factor per split."""
    out = copy.deepcopy(payload)
    for sc in out["scenarios"].values():
        entry = copy.deepcopy(sc["controllers"][DEFAULT])
        f = factor_by_split[sc["split"]]
        entry["seeds"] = [dict(s, rate=s["rate"] * f) for s in entry["seeds"]]
        entry["per_seed"] = [r * f for r in entry["per_seed"]]
        sc["controllers"]["cand"] = entry
    return out


def test_verdicts_follow_the_intervals_and_the_rule_needs_no_loss_and_a_higher_geomean():
    result = _result(_payload())
    vs_static = compare(result, DEFAULT, "static-best", split=None)
    assert (vs_static.count("win"), vs_static.count("tie"), vs_static.count("loss")) == (0, 9, 3)
    assert {c.scenario for c in vs_static.cells if c.verdict == "loss"} == {
        "bursty-gamma-8b-x8-interactive", "reasoning-70b-x8", "long-context-70b-x8"}
    assert not vs_static.meets_rule
    # the same controller ties itself everywhere and its geomean is not higher: no
    assert not compare(result, DEFAULT, DEFAULT).meets_rule
    train_only = compare(result, DEFAULT, "static-best", split="train")
    assert {c.split for c in train_only.cells} == {"train"} and len(train_only.cells) == 6


def test_a_candidate_better_on_train_meets_the_rule_whatever_it_does_on_test():
    better = _result(_with_candidate(_payload(), {"train": 1.5, "test": 0.5}))
    cmp = compare(better, "cand", DEFAULT, split="train")
    assert cmp.count("loss") == 0 and cmp.candidate_geomean > cmp.reference_geomean
    assert cmp.meets_rule
    assert not compare(better, "cand", DEFAULT, split="test").meets_rule
    slightly = _result(_with_candidate(_payload(), {"train": 1.01, "test": 1.0}))
    tie = compare(slightly, "cand", DEFAULT)
    assert tie.count("tie") == 6 and tie.meets_rule   # ties everywhere, a higher geomean


def test_a_missing_cell_fails_the_rule():
    payload = _with_candidate(_payload(), {"train": 1.5, "test": 1.0})
    del payload["scenarios"]["phase-shift-70b-x8"]["controllers"]["cand"]
    cmp = compare(_result(payload), "cand", DEFAULT)
    assert cmp.missing == ["phase-shift-70b-x8"] and not cmp.meets_rule


def test_cli_prints_the_verdicts_and_refuses_unknown_names(tmp_path):
    path = tmp_path / "cand.json"
    path.write_text(json.dumps(_with_candidate(_payload(), {"train": 1.5, "test": 1.0})))
    runner = CliRunner()
    ok = runner.invoke(app, ["suite", "compare", "--json", str(path), "--reference", DEFAULT, "--candidates", "cand"])
    assert ok.exit_code == 0, ok.output
    assert "meets the rule" in ok.output and "6 tie(s)" not in ok.output
    bad = runner.invoke(app, ["suite", "compare", "--json", str(path), "--reference", "nope"])
    assert bad.exit_code == 2 and "controller 'nope' is not in the suite result" in bad.output
    split = runner.invoke(app, ["suite", "compare", "--json", str(path), "--reference", DEFAULT, "--split", "dev"])
    assert split.exit_code == 2 and "--split must be train, test or all" in split.output


@pytest.mark.parametrize("content", ["[]", "{", '{"scenarios": 3}'])
def test_cli_bad_json_is_one_line(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    out = CliRunner().invoke(app, ["suite", "compare", "--json", str(path), "--reference", DEFAULT])
    assert out.exit_code == 2 and "Traceback" not in out.output and str(path) in out.output
