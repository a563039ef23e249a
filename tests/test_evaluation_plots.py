"""What ``arrow-rl evaluate``'s attainment plot must show: the 90% line, and each controller's
mean attainment on the common load grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from arrow_rl.evaluation import plots
from arrow_rl.evaluation.seeded_search import SeedResult
from arrow_rl.evaluation.suite import ScenarioOutcome, SuiteResult, outcome_of
from arrow_rl.evaluation.suite_spec import load_suite

TINY = Path(__file__).resolve().parent / "data" / "tiny_suite.yaml"


@pytest.fixture
def figures(monkeypatch):
    """Keep the figures the plot functions would close, to inspect them."""
    kept = []
    monkeypatch.setattr(plots.plt, "close", lambda fig=None: kept.append(fig))
    return kept


def one_scenario_result() -> SuiteResult:
    suite = load_suite(str(TINY))
    sc = suite.scenarios[0]
    seeds = [SeedResult(k, 2.0, 2.0 * sc.source.base_rate, False, 0.0, 40.0, 3, None,
                        {1.0: 1.0, 2.0: 0.95 - 0.01 * k, 4.0: 0.5}, (2.0, 4.0)) for k in range(3)]
    row = {"arrow": outcome_of("arrow", seeds)}
    return SuiteResult(suite, ["arrow"], {sc.name: ScenarioOutcome(sc, row)}, False)


def test_attainment_plot_legend_has_the_90_percent_line(tmp_path, figures):
    plots.plot_attainment_seeds(one_scenario_result(), tmp_path / "a.png")
    labels = [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()]
    assert any(label.startswith("90% target") for label in labels)


def test_attainment_plot_draws_the_mean_over_seeds_at_each_grid_load(tmp_path, figures):
    result = one_scenario_result()
    plots.plot_attainment_seeds(result, tmp_path / "a.png")
    base = next(iter(result.scenarios.values())).scenario.source.base_rate
    line = figures[0].axes[0].lines[0]
    assert list(line.get_xdata()) == pytest.approx([base, 2 * base, 4 * base])
    assert list(line.get_ydata()) == pytest.approx([100.0, 94.0, 50.0])
