"""What the evaluation plots must show: the time base, TPOT gaps, both pool lines, the 90% line."""

from __future__ import annotations

import math

import pytest

from arrow_rl.cluster.base import SLO
from arrow_rl.evaluation import plots
from arrow_rl.evaluation.evaluate import ControllerResult, EvaluationResult
from arrow_rl.evaluation.runner import RunResult, TimelinePoint


@pytest.fixture
def figures(monkeypatch):
    """Keep the figures the plot functions would close, to inspect them."""
    kept = []
    monkeypatch.setattr(plots.plt, "close", lambda fig=None: kept.append(fig))
    return kept


def point(t: float, finished: int, tpot: float, p: int = 4) -> TimelinePoint:
    return TimelinePoint(t=t, num_prefill=p, arrivals=3, ttft_mean=1.0, ttft_p90=2.0, tpot_mean=tpot, itl_mean=0.03,
                         prefill_load=0.5, decode_load=0.5, finished=finished, finished_within_slo=finished)


def run_with(points: list[TimelinePoint]) -> RunResult:
    return RunResult(policy="arrow", num_requests=1, records=[], attainment=1.0, ttft_attainment=1.0,
                     tpot_attainment=1.0, finished=1, flips=[], flips_per_min=0.0, sim_end_s=3.0, wall_s=0.0,
                     timeline=points)


def test_timeline_tpot_is_a_gap_where_nothing_finished(tmp_path, figures):
    plots.plot_timeline(run_with([point(1, 2, 0.04), point(2, 0, 0.0), point(3, 1, 0.05)]), SLO(10, 0.125), 8,
                        tmp_path / "t.png")
    tpot = figures[0].axes[2].lines[0].get_ydata()  # axes: split, TTFT, TPOT, then the twin
    assert tpot[0] == 0.04 and math.isnan(tpot[1]) and tpot[2] == 0.05


def test_timeline_x_axis_says_the_trace_was_time_scaled(tmp_path, figures):
    plots.plot_timeline(run_with([point(1, 1, 0.04)]), SLO(10, 0.125), 8, tmp_path / "t.png", time_scale=12.5)
    assert "÷ 12.5" in figures[0].axes[2].get_xlabel()


def test_timeline_pool_lines_differ_in_style_so_equal_counts_stay_visible(tmp_path, figures):
    plots.plot_timeline(run_with([point(1, 1, 0.04)]), SLO(10, 0.125), 8, tmp_path / "t.png")
    prefill, decode = figures[0].axes[0].lines[:2]
    assert (prefill.get_linestyle(), prefill.get_linewidth()) != (decode.get_linestyle(), decode.get_linewidth())


def test_attainment_plot_legend_has_the_90_percent_line(tmp_path, figures):
    row = ControllerResult(name="arrow", serving_rate=2.0, serving_scale=1.0, attainment={1.0: 1.0, 2.0: 0.95, 4.0: 0.5},
                           flips_per_min=0.0)
    result = EvaluationResult(workload="w", base_rate=1.0, reference_rate=1.0, controllers={"arrow": row}, settings={})
    plots.plot_attainment(result, tmp_path / "a.png")
    labels = [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()]
    assert any(label.startswith("90% target") for label in labels)
