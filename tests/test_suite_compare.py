"""``arrow-rl suite compare``: the model-selection rule (non-inferiority on paired ratios, a geomean
interval above 1.0, a recipe judged over at least three training seeds) on saved suite results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from arrow_rl.cli import app
from arrow_rl.evaluation.compare import MARGIN, compare
from arrow_rl.evaluation.seeded_search import SeedResult
from arrow_rl.evaluation.suite import ScenarioOutcome, SuiteResult, outcome_of
from arrow_rl.evaluation.suite_spec import load_suite

TINY = Path(__file__).resolve().parent / "data" / "tiny_suite.yaml"
REF = "agents/checkpoints/default"
SEEDS = 5


def _result(rates: dict[str, dict[str, list[float]]]) -> SuiteResult:
    """A suite result on the tiny suite's scenarios: {controller: {scenario: per-seed rates}}."""
    suite = load_suite(str(TINY))
    suite = type(suite)(suite.name, suite.path, suite.description, suite.scenarios, suite.protocol)
    outcomes = {}
    for sc in suite.scenarios:
        row = {c: outcome_of(c, [SeedResult(k, r, r, False, 0.0, 600.0, 3, None, {}, (r, r * 1.02))
                                 for k, r in enumerate(per[sc.name])])
               for c, per in rates.items() if sc.name in per}
        outcomes[sc.name] = ScenarioOutcome(sc, row)
    return SuiteResult(suite, list(rates), outcomes, False, settings={"controllers": list(rates)})


BASE = {"tiny-poisson": [10.0, 12.0, 9.0, 11.0, 10.5], "tiny-trace": [20.0, 18.0, 22.0, 19.0, 21.0]}


def _scaled(factors: dict[str, list[float]]) -> dict[str, list[float]]:
    return {n: [r * f for r, f in zip(BASE[n], factors[n])] for n in BASE}


def _gain(g: float, noise: float = 0.0, seed: int = 0) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    return _scaled({n: list(g * np.exp(rng.normal(0, noise, SEEDS))) for n in BASE})


def test_a_consistently_better_pooled_recipe_meets_the_rule():
    rates = {"arrow": BASE, REF: BASE} | {f"cand{i}": _gain(1.08, 0.01, i) for i in range(3)}
    res = _result(rates)
    cmp = compare(res, ["cand0", "cand1", "cand2"], REF, split=None)
    assert cmp.meets_rule, cmp.failures
    assert cmp.training_seeds == 3 and all(c.paired.lo > MARGIN for c in cmp.cells) and cmp.geomean[1] > 1.0


def test_one_checkpoint_is_not_a_recipe():
    res = _result({REF: BASE, "cand": _gain(1.08, 0.01)})
    cmp = compare(res, "cand", REF, split=None)
    assert not cmp.meets_rule and any("training seed" in f for f in cmp.failures)


def test_a_tie_is_not_enough_and_a_small_loss_on_one_scenario_fails_non_inferiority():
    same = _result({REF: BASE} | {f"c{i}": _gain(1.0, 0.02, i) for i in range(3)})
    tie = compare(same, ["c0", "c1", "c2"], REF, split=None)
    assert not tie.meets_rule and any("geomean interval" in f for f in tie.failures)
    worse = _scaled({"tiny-poisson": [0.93] * SEEDS, "tiny-trace": [1.2] * SEEDS})
    res = _result({REF: BASE, "a": worse, "b": worse, "c": worse})
    cmp = compare(res, ["a", "b", "c"], REF, split=None)
    assert not cmp.meets_rule and any("tiny-poisson" in f for f in cmp.failures)
    assert [c.verdict for c in cmp.cells] == ["loss", "win"]


def test_the_split_is_respected_and_a_missing_cell_fails():
    res = _result({REF: BASE} | {f"c{i}": _gain(1.1, 0.01, i) for i in range(3)})
    train = compare(res, ["c0", "c1", "c2"], REF, split="train")
    assert [c.scenario for c in train.cells] == ["tiny-poisson"]
    partial = _result({REF: BASE, "c0": {"tiny-poisson": BASE["tiny-poisson"]}})
    cmp = compare(partial, "c0", REF, split=None)
    assert cmp.missing == ["tiny-trace"] and not cmp.meets_rule


def test_cli_prints_the_rule_and_refuses_unknown_names(tmp_path):
    path = tmp_path / "r.json"
    res = _result({"arrow": BASE, REF: BASE} | {f"c{i}": _gain(1.1, 0.01, i) for i in range(3)})
    path.write_text(json.dumps(res.to_json()))
    runner = CliRunner()
    tiny = ["--suite", str(TINY)]
    ok = runner.invoke(app, ["suite", "compare", "--json", str(path), *tiny, "--reference", REF, "--candidates",
                             "c0,c1,c2", "--pool", "--split", "all"])
    assert ok.exit_code == 0, ok.output
    text = " ".join(ok.output.split())   # the console wraps long lines
    assert "meets the rule" in text and "3 training seed(s)" in text
    single = runner.invoke(app, ["suite", "compare", "--json", str(path), *tiny, "--reference", REF,
                                 "--candidates", "c0", "--split", "all"])
    assert single.exit_code == 0 and "does not meet the rule" in " ".join(single.output.split())
    bad = runner.invoke(app, ["suite", "compare", "--json", str(path), *tiny, "--reference", "nope"])
    assert bad.exit_code == 2 and "controller 'nope' is not in the suite result" in bad.output
    split = runner.invoke(app, ["suite", "compare", "--json", str(path), *tiny, "--reference", REF, "--split", "dev"])
    assert split.exit_code == 2 and "--split must be train, test or all" in split.output


@pytest.mark.parametrize("content", ["[]", "{", '{"scenarios": 3}'])
def test_cli_bad_json_is_one_line(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    out = CliRunner().invoke(app, ["suite", "compare", "--json", str(path), "--reference", REF])
    assert out.exit_code == 2 and "Traceback" not in out.output and str(path) in out.output
