"""Bad input a new user makes gets one clear line that names the file (or option) and the field."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest
import yaml
from typer.testing import CliRunner

import envs  # noqa: F401  (registers the env ids)
from agents.config import ConfigError, config_from_dict, load_config
from arrow_rl.cli import app
from arrow_rl.cluster.emulator import EmulatorConfig

SMOKE = Path("configs/train/smoke.yaml")


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_an_unknown_preset_is_the_one_emulator_config_error():
    # the scheduler limits default from the preset: with no preset there is nothing to complain about
    with pytest.raises(ValueError) as info:
        EmulatorConfig(preset="h100-foo", num_instances=8, max_num_batched_tokens=None, max_num_seqs=None)
    text = str(info.value)
    assert "unknown preset 'h100-foo'" in text
    assert "max_num_batched_tokens" not in text and "max_num_seqs" not in text
    # a limit the user did pass is still checked beside the preset
    with pytest.raises(ValueError, match="max_num_seqs"):
        EmulatorConfig(preset="h100-foo", num_instances=8, max_num_seqs=0)


def test_evaluate_with_an_unknown_preset_names_only_the_preset():
    r = CliRunner().invoke(app, ["evaluate", "--preset", "h100-foo", "--instances", "8", "--workload", "azure-conv",
                                 "--slo-ttft", "2", "--slo-tpot", "0.1", "--controllers", "arrow"])
    assert r.exit_code == 2
    lines = _error_lines(r.output)
    assert len(lines) == 1 and lines[0].startswith("error:") and "unknown preset 'h100-foo'" in lines[0]
    assert "max_num_batched_tokens" not in r.output and "max_num_seqs" not in r.output


def _bad_preset_yaml(tmp_path: Path) -> Path:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["env"]["preset"] = "h100-foo"
    bad = tmp_path / "bad_preset.yaml"
    bad.write_text(yaml.safe_dump(raw))
    return bad


def test_a_wrong_preset_in_a_train_yaml_is_one_line_naming_file_and_field(tmp_path):
    bad = _bad_preset_yaml(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{bad}: env.preset: unknown preset 'h100-foo'")


def test_train_with_a_wrong_preset_leaves_no_run_directory(tmp_path):
    bad = _bad_preset_yaml(tmp_path)
    runs = tmp_path / "runs"
    r = CliRunner().invoke(app, ["train", "--config", str(bad), "--log-dir", str(runs), "--no-progress"])
    assert r.exit_code == 2
    lines = _error_lines(r.output)
    assert len(lines) == 1 and f"{bad}: env.preset" in lines[0], r.output
    assert not runs.exists() or not any(runs.iterdir())


def test_a_failed_start_after_the_run_directory_exists_removes_it(tmp_path, monkeypatch):
    # anything failing before the model exists (here: the envs) leaves no empty run directory behind
    import agents.train as train_mod

    def broken(_config):
        raise ValueError("env workers failed to start")

    monkeypatch.setattr(train_mod, "build_vec_env", broken)
    cfg = config_from_dict(yaml.safe_load(SMOKE.read_text()), source=str(SMOKE))
    runs = tmp_path / "runs"
    with pytest.raises(ValueError, match="env workers failed to start"):
        train_mod.train(cfg, run_root=runs, progress=False)
    assert not any(runs.iterdir())


def test_gym_make_with_an_unknown_preset_fails_at_make_in_one_error():
    with pytest.raises(ValueError) as info:
        gym.make("arrow_rl/PDCluster-v0", preset="h100-foo")
    assert "preset: unknown preset 'h100-foo'" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__   # no chained traceback


def test_deploy_checks_the_checkpoint_path_before_the_token_and_router(tmp_path, monkeypatch):
    monkeypatch.delenv("ARROW_RL_TOKEN", raising=False)
    missing = tmp_path / "no_such_checkpoint"
    # no token and no router at this address: neither may be what is reported
    r = CliRunner().invoke(app, ["deploy", "--controller", str(missing), "--router", "http://127.0.0.1:9"])
    assert r.exit_code == 2
    lines = _error_lines(r.output)
    assert len(lines) == 1 and str(missing) in lines[0] and "no such checkpoint directory" in lines[0]
    assert "token" not in r.output and "reach" not in r.output
    broken = tmp_path / "broken"
    broken.mkdir()   # a directory without metadata.json
    r = CliRunner().invoke(app, ["deploy", "--controller", str(broken), "--router", "http://127.0.0.1:9"])
    assert r.exit_code == 2 and "metadata.json" in r.output and "token" not in r.output


@pytest.mark.parametrize("argv", [
    ["evaluate", "--preset", "h100-llama3.1-8b-tp1", "--instances", "8", "--workload", "azure-conv",
     "--slo-ttft", "2", "--slo-tpot", "0.1", "--jobs", "0"],
    ["suite", "run", "configs/suites/standard.yaml", "--jobs", "0", "--json", "out.json"],
])
def test_jobs_zero_gets_the_same_error_line_as_other_bad_values(argv):
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 2
    lines = _error_lines(r.output)
    assert lines == [lines[0]] and lines[0].startswith("error: invalid value for '--jobs'"), r.output
    assert "Usage" not in r.output and "╭" not in r.output


def test_a_missing_option_keeps_the_usage_help():
    r = CliRunner().invoke(app, ["evaluate", "--preset", "h100-llama3.1-8b-tp1"])
    assert r.exit_code == 2 and "Usage" in r.output and "Missing option" in r.output


def test_train_progress_is_printed_as_lines_and_ends_at_the_real_total(tmp_path):
    # CliRunner's stdout is not a terminal: the run prints lines, counted against the steps really taken
    r = CliRunner().invoke(app, ["train", "--config", str(SMOKE), "--log-dir", str(tmp_path / "runs"),
                                 "--n-timesteps", "200"])
    assert r.exit_code == 0, r.output
    assert "RL: 256 steps (200 asked, rounded up to whole rollouts of 128 steps)" in r.output
    rl_lines = [line for line in r.output.splitlines() if line.startswith("RL: ") and "/" in line]
    assert rl_lines and rl_lines[-1].startswith("RL: 256/256 steps")
    assert "imitation: " in r.output   # the imitation phase prints its lines too
    assert "evaluation at 256 steps: attainment " in r.output


def test_planned_timesteps_match_what_sb3_takes():
    from types import SimpleNamespace

    from agents.train import planned_timesteps

    ppo = SimpleNamespace(n_envs=2, n_steps=1024)
    assert planned_timesteps(ppo, 40_000) == 40_960 and planned_timesteps(ppo, 4096) == 4096
    dqn = SimpleNamespace(n_envs=4, n_steps=None, train_freq=SimpleNamespace(frequency=4, unit=SimpleNamespace(value="step")))
    assert planned_timesteps(dqn, 100) == 112
