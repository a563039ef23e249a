"""``arrow-rl tune`` (agents.tune): a search space in the training config, trials scored on the
suite's train scenarios only, the best config written back."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agents.config import ConfigError, load_config
from agents.tune import load_tune_job

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests" / "data" / "tune_smoke.yaml"
SUITE = ROOT / "tests" / "data" / "ray_suite.yaml"


def _variant(tmp_path: Path, **tune_updates) -> Path:
    data = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    data["tune"].update(tune_updates)
    data["tune"]["suite"] = str(SUITE)
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    return p


def test_the_objective_defaults_to_the_suites_train_scenarios_only():
    job = load_tune_job(CONFIG)
    assert job.scenarios == ["ray-poisson"]  # ray-gamma is split: test
    assert "tune" not in job.base and job.suite_path == SUITE.resolve()


def test_a_test_scenario_as_objective_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"tune.scenarios: 'ray-gamma' is a split: test scenario of suite ray-tiny; "
                                          r"held-out scenarios are never tuned on"):
        load_tune_job(_variant(tmp_path, scenarios=["ray-poisson", "ray-gamma"]))


def test_an_unknown_scenario_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"tune.scenarios: 'nope' is not a scenario of suite ray-tiny"):
        load_tune_job(_variant(tmp_path, scenarios=["nope"]))


def test_a_space_value_that_breaks_the_config_is_named_before_any_trial(tmp_path):
    with pytest.raises(ConfigError, match=r"tune.space.n_epochs = 0 makes the config invalid: .*n_epochs must be >= 1"):
        load_tune_job(_variant(tmp_path, space={"n_epochs": {"choice": [1, 0]}}))


def test_a_malformed_distribution_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"tune: .*loguniform needs \[low, high\] with 0 < low < high"):
        load_tune_job(_variant(tmp_path, space={"learning_rate": {"loguniform": [0.0, 1e-3]}}))


def test_train_reads_a_config_with_a_tune_section():
    assert load_config(CONFIG).n_timesteps == 64


def test_two_trials_on_ray_write_the_best_config(tmp_path):
    ray = pytest.importorskip("ray")
    from agents.tune import run_tune, write_best

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        job = load_tune_job(CONFIG)
        result = run_tune(job, tmp_path / "runs")
    finally:
        ray.shutdown()
    assert len(result.trials) == 2 and all(t["serving_rate"] > 0 for t in result.trials)
    assert list(result.trials[0]["per_scenario"]) == ["ray-poisson"]
    assert len({t["checkpoint"] for t in result.trials}) == 2  # concurrent trials do not share a run directory
    assert result.best_score == max(t["serving_rate"] for t in result.trials)
    best = load_config(write_best(result, job, tmp_path / "best.yaml"))  # a valid training config
    assert best.tune is None
    assert best.learning_rate == result.best_params["learning_rate"]
    assert best.policy_kwargs["net_arch"] == result.best_params["policy_kwargs.net_arch"]
    assert 1e-4 <= best.learning_rate <= 1e-3


def test_tune_command_refuses_a_test_scenario_in_one_line(tmp_path):
    pytest.importorskip("ray")
    from typer.testing import CliRunner

    from arrow_rl.cli import app

    cfg = _variant(tmp_path, scenarios=["ray-gamma"])
    res = CliRunner().invoke(app, ["tune", "--config", str(cfg), "--out", str(tmp_path / "best.yaml")])
    assert res.exit_code == 2 and "'ray-gamma' is a split: test scenario" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "best.yaml").exists()
