"""The deploy-time move margin (issue 12): a checkpoint holds at the no-op unless a move beats it by
``inference.move_margin``; a bad value names the field before anything is unpickled."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from agents import DEFAULT_CHECKPOINT
from agents.checkpoint import CheckpointError, load_checkpoint
from agents.controller import CheckpointController
from agents.inference import hold_unless_confident, masked_argmax
from envs import PDClusterEnv


def test_margin_zero_is_the_plain_masked_argmax():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scores, mask = rng.normal(size=7), rng.random(7) < 0.7
        mask[0] = True
        assert hold_unless_confident(scores, mask, 0, 0.0) == masked_argmax(scores, mask)[0]


def test_a_narrow_move_is_held_and_a_clear_one_taken():
    scores = np.array([1.0, 1.5, 0.0])
    assert hold_unless_confident(scores, None, 0, 0.75) == 0       # 0.5 < 0.75: hold
    assert hold_unless_confident(scores, None, 0, 0.5) == 1       # 0.5 >= 0.5: move
    assert hold_unless_confident(scores, np.array([True, False, True]), 0, 0.75) == 0
    assert hold_unless_confident(np.array([0.0, 3.0, 1.0]), np.array([True, False, True]), 0, 0.5) == 2
    # the target codec's no-op is the current split, not index 0
    assert hold_unless_confident(np.array([2.0, 1.0, 1.3]), None, 1, 1.5) == 1
    # a masked no-op is never chosen by the margin
    assert hold_unless_confident(scores, np.array([False, True, True]), 0, 5.0) == 1


def _with_margin(tmp_path, value):
    d = tmp_path / "ckpt"
    shutil.copytree(DEFAULT_CHECKPOINT, d)
    meta = json.loads((d / "metadata.json").read_text())
    meta["inference"] = {"move_margin": value}
    (d / "metadata.json").write_text(json.dumps(meta))
    return d


@pytest.mark.parametrize("bad", [-1, "1", float("nan"), True, None])
def test_a_bad_margin_names_the_field(tmp_path, bad):
    d = _with_margin(tmp_path, bad)
    with pytest.raises(CheckpointError, match=r"metadata.json.*inference.move_margin"):
        load_checkpoint(d)


def test_a_huge_margin_never_moves_and_zero_moves_as_trained(tmp_path):
    env_config = {"preset": "h100-llama3.1-70b-tp4", "num_instances": 8, "slo_ttft_s": 10.0, "slo_tpot_s": 0.125,
                  "episode": {"traces": ["azure-conv"], "duration_s": 60, "drain_s": 1, "rate_scale": [8.0, 8.0]}}
    flips = {}
    for margin in (0.0, 1e6):
        ctrl = CheckpointController.load(_with_margin(tmp_path / str(margin), margin))
        assert ctrl.move_margin == margin
        env = PDClusterEnv(env_config)
        env.reset(seed=0)
        ctrl.reset(env.cluster.info)
        flips[margin] = 0
        for _ in range(40):
            f = ctrl.act(env.control_state)
            flips[margin] += len(f)
            for x in f:
                env.cluster.flip(x.instance_id, x.role)
            env.cluster.advance(1.0)
    assert flips[1e6] == 0 < flips[0.0]
