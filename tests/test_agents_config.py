"""The training config schema: rl-zoo3 style YAML validated at the boundary."""

from __future__ import annotations

import pytest

from agents.config import ConfigError, build_hyperparams, build_policy_kwargs, config_from_dict, load_config, parse_schedule

BASE = {"name": "t", "algo": "ppo", "env": {"id": "agents/TeacherToy-v0"}}


def test_linear_schedule_decays_from_initial_to_zero():
    sched = parse_schedule("lin_3e-4", "learning_rate")
    assert sched(1.0) == pytest.approx(3e-4)
    assert sched(0.5) == pytest.approx(1.5e-4)
    assert sched(0.0) == 0.0


def test_constant_schedule_forms():
    assert parse_schedule(0.2, "clip_range") == 0.2
    assert parse_schedule("const_0.1", "clip_range") == 0.1


def test_bad_schedule_names_the_field():
    with pytest.raises(ConfigError, match="learning_rate"):
        config_from_dict({**BASE, "learning_rate": "exp_3e-4"})


def test_unknown_hyperparameter_is_named_with_valid_ones():
    with pytest.raises(ConfigError, match=r"n_stepz.*valid"):
        config_from_dict({**BASE, "n_stepz": 128})


def test_hyperparameters_are_checked_per_algorithm():
    config_from_dict({**BASE, "algo": "dqn", "buffer_size": 1000})
    with pytest.raises(ConfigError, match="buffer_size"):
        config_from_dict({**BASE, "algo": "ppo", "buffer_size": 1000})


def test_unknown_pretrain_field_rejected():
    with pytest.raises(ConfigError, match="pretrain.dagger_roundz"):
        config_from_dict({**BASE, "pretrain": {"dagger_roundz": 2}})


def test_behaviour_cloning_needs_an_actor_critic_algorithm():
    with pytest.raises(ConfigError, match="dqn"):
        config_from_dict({**BASE, "algo": "dqn", "pretrain": {"enabled": True}})


def test_normalize_true_means_default_vecnormalize():
    cfg = config_from_dict({**BASE, "normalize": True})
    assert cfg.normalize_config is not None and cfg.normalize_config.norm_obs
    assert config_from_dict(BASE).normalize_config is None


def test_schedules_and_activations_are_built_for_sb3():
    import torch.nn as nn

    cfg = config_from_dict({**BASE, "learning_rate": "lin_1e-3", "n_steps": 64, "policy_kwargs": {"activation_fn": "relu"}})
    hp = build_hyperparams(cfg)
    assert callable(hp["learning_rate"]) and hp["n_steps"] == 64
    assert build_policy_kwargs(cfg.policy_kwargs)["activation_fn"] is nn.ReLU


def test_unknown_activation_rejected():
    with pytest.raises(ConfigError, match="activation_fn"):
        config_from_dict({**BASE, "policy_kwargs": {"activation_fn": "swishy"}})


def test_eval_env_overrides_merge_over_the_training_env():
    cfg = config_from_dict({**BASE, "env": {"id": "x/Y-v0", "a": 1, "b": 2}, "eval": {"env": {"b": 3}}})
    assert cfg.eval_env_block().env_kwargs() == {"a": 1, "b": 3}


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nalgo: sac\n")
    with pytest.raises(ConfigError, match=r"(?s)bad\.yaml.*algo"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_cli_overrides_replace_config_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nalgo: ppo\nseed: 1\nn_timesteps: 100\n")
    cfg = load_config(path, {"seed": 7, "n_timesteps": None})
    assert cfg.seed == 7 and cfg.n_timesteps == 100


def test_eval_keep_chooses_which_checkpoint_is_exported(tmp_path):
    from agents.config import EvalConfig
    from agents.train import TrainResult, export_checkpoint

    dirs = {}
    for name in ("final", "best"):
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        (dirs[name] / "model.zip").write_text(name)
    best = TrainResult(tmp_path, dirs["final"], dirs["best"], None)
    assert best.selected_dir == dirs["best"]
    final = TrainResult(tmp_path, dirs["final"], dirs["best"], None, keep="final")
    assert (export_checkpoint(final, tmp_path / "out") / "model.zip").read_text() == "final"
    assert EvalConfig().keep == "best"
    with pytest.raises(ValueError, match="keep"):
        EvalConfig(keep="worst")


def test_imitation_progress_prints_plain_lines_when_not_on_a_terminal(capsys):
    from agents.train import _progress

    with _progress(True, "imitation", 100) as advance:   # capsys' stdout is not a terminal
        for _ in range(25):
            advance(4)
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("imitation: ")]
    assert len(lines) == 10 and lines[0].startswith("imitation: 12/100 steps") and lines[-1].startswith("imitation: 100/100")
    with _progress(False, "imitation", 100) as advance:
        advance(100)
    assert capsys.readouterr().out == ""
