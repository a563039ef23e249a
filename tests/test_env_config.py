"""EnvConfig validation and YAML loading: errors name the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from envs.config import EnvConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "env").glob("*.yaml"))


def test_defaults_start_half_and_half():
    assert EnvConfig().start_prefill == 4


def test_unknown_field_is_named(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("num_instances: 8\nepisode:\n  duraton_s: 10\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*episode\.duraton_s"):
        EnvConfig.from_yaml(p)


def test_bad_value_is_named_with_the_value(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("control_interval_s: -1\n")
    with pytest.raises(ValueError, match=r"control_interval_s.*-1"):
        EnvConfig.from_yaml(p)


def test_initial_prefill_must_leave_both_pools_nonempty():
    with pytest.raises(ValueError, match="initial_prefill"):
        EnvConfig.from_dict({"num_instances": 4, "initial_prefill": 4})


def test_rate_scale_range_is_checked():
    with pytest.raises(ValueError, match="rate_scale"):
        EnvConfig.from_dict({"episode": {"rate_scale": [2.0, 1.0]}})


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        EnvConfig.from_yaml(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_bundled_example_configs_load(path):
    EnvConfig.from_yaml(path)


@pytest.mark.parametrize("yaml_name, env_id", [
    ("azure-conv.yaml", "arrow_rl/PDCluster-AzureConv-v0"),
    ("azure-code.yaml", "arrow_rl/PDCluster-AzureCode-v0"),
    ("mooncake.yaml", "arrow_rl/PDCluster-Mooncake-v0"),
    ("phase-shift.yaml", "arrow_rl/PDCluster-PhaseShift-v0"),
])
def test_example_configs_describe_the_registered_variants(yaml_name, env_id):
    from envs import VARIANTS

    root = Path(__file__).resolve().parents[1] / "configs" / "env"
    assert EnvConfig.from_yaml(root / yaml_name) == EnvConfig.from_dict(VARIANTS[env_id])
