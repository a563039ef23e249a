"""The shipped checkpoint (agents/checkpoints/default) is the generalist (issue 12): it records its
training distribution, loads, and controls clusters of any size in that distribution with P/D/MIXED."""

from __future__ import annotations

import pytest

from agents import DEFAULT_CHECKPOINT, load_controller
from agents.checkpoint import read_metadata
from arrow_rl.cluster.base import Flip, Role
from envs import PDClusterEnv
from envs.config import with_saved_defaults


def test_default_checkpoint_is_small_and_described():
    size = sum(p.stat().st_size for p in DEFAULT_CHECKPOINT.iterdir())
    assert size < 4_000_000   # 256x256 actor and critic with Adam's state: 2.6 MB
    meta = read_metadata(DEFAULT_CHECKPOINT)
    assert meta["algo"] == "maskable_ppo" and meta["name"] == "generalist_split_wide"
    assert meta["env_config"]["teacher"] == "oracle-split"
    assert len(meta["observation_features"]) == meta["observation_space"]["shape"][0]
    dist = meta["training_distribution"]
    assert dist["num_instances_range"] == [4, 32] and dist["roles"] == ["prefill", "decode", "mixed"]
    assert meta["env_config"]["action"]["kind"] == "moves" and meta["env_config"]["action"]["decision_every"] == 5
    # what the pipeline measured is kept with it (docs/agents.md's model card quotes it)
    assert meta["training"]["clone_eval"]["serving_rate_scale"] > 0 and meta["training"]["pretrain"]["rounds"]


@pytest.mark.parametrize("n,mixed", [(4, 0), (8, 2), (32, 8)])
def test_default_checkpoint_controls_every_size_it_was_trained_for(n, mixed):
    meta = read_metadata(DEFAULT_CHECKPOINT)
    # the env it was trained in: fields added since it was saved take the values it was trained with
    env = PDClusterEnv(with_saved_defaults({**meta["env_config"], "teacher": None, "distribution": None, "num_instances": n,
                        "emulator": {"num_mixed": mixed},
                        "episode": {"traces": ["azure-conv"], "duration_s": 12, "drain_s": 2, "rate_scale": [n / 2, n / 2]}}))
    assert not env.config.action.distinct_moves and env.config.episode.end == "terminate"
    env.reset(seed=0)
    controller = load_controller(DEFAULT_CHECKPOINT)
    controller.reset(env.cluster.info)
    for _ in range(10):
        flips = controller.act(env.control_state)
        assert all(isinstance(f, Flip) and f.role in (Role.PREFILL, Role.DECODE, Role.MIXED) for f in flips)
        env.step(0)
