"""The published leaderboard's headline rows regenerate within their stated intervals (slow).

``docs/leaderboard.json`` is written by ``arrow-rl suite run --json docs/leaderboard.json``; these
tests rerun its headline rows (Arrow and the best static split on the first train and first test
scenario) with the protocol recorded in the file and compare.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arrow_rl.evaluation.suite import run_suite
from arrow_rl.evaluation.suite_spec import load_suite

ROOT = Path(__file__).resolve().parents[1]
LEADERBOARD = ROOT / "docs" / "leaderboard.json"
HEADLINE_CONTROLLERS = ("arrow", "static-tuned")


def headline_rows() -> list[tuple[str, str]]:
    if not LEADERBOARD.is_file():
        return []
    data = json.loads(LEADERBOARD.read_text(encoding="utf-8"))
    rows = []
    for split in ("train", "test"):
        name = next((n for n, s in data["scenarios"].items() if s["split"] == split), None)
        if name is not None:
            rows += [(name, c) for c in HEADLINE_CONTROLLERS if c in data["scenarios"][name]["controllers"]]
    return rows


@pytest.mark.slow
def test_the_leaderboard_file_exists_and_names_its_protocol():
    data = json.loads(LEADERBOARD.read_text(encoding="utf-8"))
    assert data["suite"] == "standard" and data["settings"]["protocol"]["seeds"]
    assert headline_rows()


@pytest.mark.slow
@pytest.mark.parametrize("scenario,controller", headline_rows() or [("missing", "arrow")])
def test_headline_row_regenerates_within_its_stated_interval(scenario, controller):
    assert LEADERBOARD.is_file(), "docs/leaderboard.json missing: run arrow-rl suite run --json docs/leaderboard.json"
    data = json.loads(LEADERBOARD.read_text(encoding="utf-8"))
    stated = data["scenarios"][scenario]["controllers"][controller]
    suite = load_suite(data["suite"], quick=data["quick"])
    suite = type(suite)(suite.name, suite.path, suite.description,
                        [s for s in suite.scenarios if s.name == scenario], suite.protocol)
    result = run_suite(suite, [controller])
    interval = result.scenarios[scenario].controllers[controller].interval
    lo, hi = stated["ci95"]
    hi = float("inf") if hi is None else hi
    assert lo - 1e-9 <= interval.mean <= hi + 1e-9, (
        f"{scenario}/{controller}: regenerated {interval.mean:.3f} outside the stated [{lo:.3f}, {hi:.3f}]; "
        "regenerate the leaderboard (docs/evaluation.md)")
