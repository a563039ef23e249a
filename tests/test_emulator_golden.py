"""The golden set: the emulator's outputs on small cases, pinned bit for bit (tests/golden/).

Records, windows, router views and counters of each case (``tests/golden/make_golden.py``) must
match the committed digests exactly: speed work on the emulator may not change a single bit. An
intended change of behaviour regenerates ``emulator_golden.json`` in its own commit."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("make_golden", Path(__file__).with_name("golden") / "make_golden.py")
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)

WANT = json.loads(make_golden.GOLDEN.read_text())


def test_the_golden_file_covers_every_case():
    assert sorted(WANT) == sorted(make_golden.ALL_CASES)


@pytest.mark.parametrize("name", sorted(make_golden.CASES))
def test_golden_case_is_bit_identical(name):
    assert make_golden.CASES[name]() == WANT[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(make_golden.SLOW_CASES))
def test_golden_hour_of_traffic_is_bit_identical(name):
    assert make_golden.SLOW_CASES[name]() == WANT[name]


@pytest.mark.parametrize("name", sorted(make_golden.CASES))
def test_golden_case_is_bit_identical_on_the_reference_path(name, monkeypatch):
    """With the fast paths off (``ARROW_EMULATOR_REFERENCE=1``) the digests are the same."""
    from arrow_rl.cluster.emulator import fastpath

    monkeypatch.setattr(fastpath, "ENABLED", False)
    assert make_golden.CASES[name]() == WANT[name]


def test_the_fast_paths_are_on_by_default_and_the_reference_switch_turns_them_off(monkeypatch):
    from arrow_rl.cluster.emulator import fastpath
    from arrow_rl.routing import make_router

    w = make_golden._azure(0, 5)
    assert make_golden._cluster(w, router=make_router("least-loaded"))._least_loaded is fastpath.ENABLED
    monkeypatch.setattr(fastpath, "ENABLED", False)
    assert not make_golden._cluster(w, router=make_router("least-loaded"))._least_loaded
