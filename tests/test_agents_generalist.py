"""The generalist checkpoint (issue 12): its metadata records the training distribution, one checkpoint
controls clusters of any size with P/D/MIXED roles, and leaving the distribution is said aloud."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.checkpoint import distribution_warnings, read_metadata, save_checkpoint
from agents.config import load_config
from agents.controller import CheckpointController
from agents.train import checkpoint_metadata
from arrow_rl.cluster.base import SLO, ClusterInfo, Mode, Role
from arrow_rl.control import ControlState
from envs import PDClusterEnv

ROOT = Path(__file__).resolve().parents[1]
GENERALIST = ROOT / "configs" / "train" / "generalist.yaml"


@pytest.fixture(scope="module")
def meta():
    return checkpoint_metadata(load_config(GENERALIST))


# moves, splits, and splits reading load in units of the profiled capacity
@pytest.fixture(scope="module", params=["generalist.yaml", "generalist_splits.yaml", "generalist_splits_capacity.yaml"])
def checkpoint(request, tmp_path_factory):
    from sb3_contrib import MaskablePPO

    meta = checkpoint_metadata(load_config(GENERALIST.parent / request.param))
    cfg = dict(meta["env_config"])
    env = PDClusterEnv({**cfg, "teacher": None, "episode": {"duration_s": 5, "drain_s": 1}})
    model = MaskablePPO("MlpPolicy", env, n_steps=16, batch_size=16, seed=0, policy_kwargs={"net_arch": [8]})
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "generalist", model, meta)


def test_metadata_records_presets_sizes_tiers_and_roles(meta):
    dist = meta["training_distribution"]
    assert dist["presets"] == ["h100-llama3.1-70b-tp4"]
    assert dist["num_instances_range"] == [4, 32] and dist["cluster_sizes"] == list(range(4, 33))
    assert set(dist["slo_tiers"]) == {"loose", "interactive"}
    assert dist["roles"] == ["prefill", "decode", "mixed"]
    assert meta["action_encoding"]["kind"] == "moves" and meta["action_encoding"]["n"] == 19


@pytest.mark.parametrize("n,slo", [(4, (10.0, 0.125)), (16, (3.0, 0.05)), (32, (10.0, 0.125))])
def test_inside_the_distribution_nothing_is_said(meta, n, slo):
    assert distribution_warnings(meta, preset="h100-llama3.1-70b-tp4", num_instances=n,
                                 slo_ttft_s=slo[0], slo_tpot_s=slo[1]) == []


def test_another_preset_size_or_slo_tier_is_each_named(meta):
    lines = distribution_warnings(meta, preset="h100-llama3.1-8b-tp1", num_instances=48, slo_ttft_s=2.0,
                                  slo_tpot_s=0.1)
    text = " | ".join(lines)
    assert len(lines) == 3
    assert "h100-llama3.1-70b-tp4" in text and "4 to 32 instances, not 48" in text and "SLO tiers" in text


@pytest.mark.parametrize("n", [4, 8, 32])
def test_one_checkpoint_controls_every_cluster_size(checkpoint, n):
    ctrl = CheckpointController.load(checkpoint)
    env = PDClusterEnv({**read_metadata(checkpoint)["env_config"], "teacher": None, "num_instances": n,
                        "distribution": None, "emulator": {"num_mixed": n // 4},
                        "episode": {"traces": ["azure-code"], "duration_s": 5, "drain_s": 1, "rate_scale": [4.0, 4.0]}})
    env_obs, _ = env.reset(seed=0)
    ctrl.reset(env.cluster.info)
    state: ControlState = env.control_state
    obs, mask = ctrl.observe(state)
    assert obs.shape == env.observation_space.shape and mask.shape == (read_metadata(checkpoint)["action_encoding"]["n"],)
    assert np.array_equal(obs, env_obs)   # deployed, the checkpoint reads what it read in training
    flips = ctrl.act(state)
    assert all(f.role in (Role.PREFILL, Role.DECODE, Role.MIXED) for f in flips)


def test_deploy_warns_before_it_starts_outside_the_distribution(checkpoint):
    from arrow_rl.cli.live import _deploy_warnings

    info = ClusterInfo(num_instances=2, preset="live", slo=SLO(2.0, 0.1), mode=Mode.DISAGGREGATED,
                       initial_roles=(Role.PREFILL, Role.DECODE))
    text = " | ".join(_deploy_warnings(str(checkpoint), info, policy=None))
    assert "4 to 32 instances, not 2" in text and "SLO tiers" in text


def test_only_a_capacity_checkpoint_needs_the_instances_profile(checkpoint):
    from agents.checkpoint import CheckpointMismatchError

    info = ClusterInfo(num_instances=4, preset="live", slo=SLO(10.0, 0.125), mode=Mode.DISAGGREGATED,
                       initial_roles=(Role.PREFILL,) * 2 + (Role.DECODE,) * 2, extra={"profiles": None})
    ctrl = CheckpointController.load(checkpoint)
    if read_metadata(checkpoint)["env_config"]["observation"].get("load_features", "raw") == "capacity":
        with pytest.raises(CheckpointMismatchError, match="live-profile"):
            ctrl.reset(info)
    else:   # raw rates: a live router without measured profiles is enough
        ctrl.reset(info)
