"""scripts/lomo_report.py's bookkeeping: fit labels, per-preset split, manifest globs.

The fits themselves need the real runs (not shipped); these checks keep the parts that decide which
constants replay which run from drifting."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from arrow_rl.fidelity.report import FidelityReport

_SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(_SCRIPTS))
_spec = importlib.util.spec_from_file_location("lomo_report", _SCRIPTS / "lomo_report.py")
lomo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lomo)


def test_labels_name_the_left_out_model_in_a_file_safe_way():
    assert lomo.label("openai/gpt-oss-120b") == "without-openai-gpt-oss-120b"
    assert lomo.label("mistralai/Mixtral-8x7B-v0.1") == "without-mistralai-mixtral-8x7b-v0.1"


def test_split_by_preset_keeps_every_stage_once():
    rep = FidelityReport(stages=[SimpleNamespace(preset=p) for p in ("a", "b", "a")])
    parts = lomo.split(rep, "preset")
    assert {k: len(v.stages) for k, v in parts.items()} == {"a": 2, "b": 1}
    assert lomo.split(rep, None) == {"": rep}


def test_a_manifest_glob_that_matches_nothing_is_an_error(tmp_path):
    (tmp_path / "run1").mkdir()
    assert lomo.expand(tmp_path / "m.json", ["run*"]) == [tmp_path / "run1"]
    with pytest.raises(SystemExit):
        lomo.expand(tmp_path / "m.json", ["missing*"])
