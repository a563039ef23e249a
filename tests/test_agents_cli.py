"""`arrow-rl train` and the shipped training configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.config import load_config
from agents.envs_bridge import env_config
from arrow_rl.cli import app

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "train").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_training_configs_validate(path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    env_config(cfg.env.id, cfg.env.env_kwargs())  # the env block is a valid EnvConfig
    env_config(cfg.eval_env_block().id, cfg.eval_env_block().env_kwargs())


def test_train_command_writes_a_checkpoint(tmp_path):
    out = tmp_path / "ckpt"
    result = CliRunner().invoke(app, ["train", "--config", str(Path("configs/train/smoke.yaml")), "--log-dir",
                                      str(tmp_path / "runs"), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (out / "model.zip").is_file() and (out / "metadata.json").is_file()
    assert "imitation round 0" in result.output


def test_train_command_reports_config_errors_with_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nalgo: ppo\nn_stepz: 3\n")
    result = CliRunner().invoke(app, ["train", "--config", str(bad), "--no-progress"])
    assert result.exit_code == 2
    assert "n_stepz" in result.output


def test_train_command_reports_env_field_errors(tmp_path):
    bad = tmp_path / "bad_env.yaml"
    bad.write_text("name: bad_env\nalgo: ppo\nenv: {num_instancez: 8}\neval: {enabled: false}\n")
    result = CliRunner().invoke(app, ["train", "--config", str(bad), "--log-dir", str(tmp_path), "--no-progress"])
    assert result.exit_code == 2
    assert "num_instancez" in result.output
