"""The suite's power check (slow): the protocol calls a controller on 5% faster instances a win
against itself, and an identical copy a tie, on the power suite's scenarios."""

from __future__ import annotations

from pathlib import Path

import pytest

from arrow_rl.evaluation.power import power_check
from arrow_rl.evaluation.suite_spec import load_suite
from arrow_rl.perf.presets import get_preset

POWER_SUITE = Path(__file__).resolve().parent / "data" / "power_suite.yaml"


def test_a_sped_up_preset_is_faster_by_exactly_its_factor():
    p = get_preset("h100-llama3.1-8b-tp1")
    fast = p.sped_up(1.05)
    assert fast.latency.iteration_time(512, 1000.0, 8, 4000) == pytest.approx(p.latency.iteration_time(512, 1000.0, 8, 4000) / 1.05)
    assert fast.kv_transfer_time(1000) == pytest.approx(p.kv_transfer_time(1000) / 1.05)
    assert p.sped_up(1.0) is p


@pytest.mark.slow
def test_the_protocol_sees_a_five_percent_faster_cluster_and_no_false_difference():
    res = power_check(load_suite(str(POWER_SUITE)), "arrow", 1.05, jobs=2)
    wins = [n for n, p in res.faster.items() if p.verdict == "win"]
    assert len(wins) >= 4, {n: (round(p.ratio, 3), p.verdict) for n, p in res.faster.items()}
    assert res.false_calls == 0 and all(p.ratio == 1.0 for p in res.identical.values())
