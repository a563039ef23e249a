"""The what-if planner (``arrow_rl.controllers.whatif``) and the three lookahead planners built on it.

The golden cases (``tests/golden/make_whatif_golden.py``) pin the clairvoyant oracle's decisions and
the env teachers' labels and candidate scores exactly; the rest checks the planner's own contract."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "make_whatif_golden", Path(__file__).with_name("golden") / "make_whatif_golden.py")
make_whatif_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_whatif_golden)

WANT = json.loads(make_whatif_golden.GOLDEN.read_text())


def test_the_golden_file_covers_every_case():
    assert sorted(WANT) == sorted(make_whatif_golden.CASES)


@pytest.mark.parametrize("name", sorted(make_whatif_golden.CASES))
def test_planner_decisions_match_the_golden_set(name):
    assert make_whatif_golden.CASES[name]() == WANT[name]
