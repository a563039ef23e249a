"""Held-out time ranges: training and evaluation episodes never share a request."""

from __future__ import annotations

import numpy as np
import pytest

from agents.config import config_from_dict
from agents.holdout import apply_holdout, split_point, split_trace
from arrow_rl.workload.loaders import load_workload


def test_split_point_leaves_the_last_fraction_of_the_span():
    assert split_point(0.0, 100.0, 0.25) == 75.0
    assert split_point(10.0, 110.0, 0.5) == 60.0


def test_trace_split_is_disjoint_and_complete(tmp_path):
    info = split_trace("azure-code", 0.25, tmp_path)
    full = load_workload("azure-code")
    train, held = load_workload(info["train"]), load_workload(info["heldout"])
    assert len(train) + len(held) == len(full)
    assert float(train.arrival_s[-1]) < info["cut_s"] - float(full.arrival_s[0])
    np.testing.assert_array_equal(held.input_tokens, full.input_tokens[len(train):])
    assert held.arrival_s[0] >= 0.0


def _cfg(eval_on: str):
    return config_from_dict({
        "name": "h", "algo": "ppo",
        "env": {"id": "arrow_rl/PDCluster-v0", "episode": {"traces": ["azure-code"], "duration_s": 30}},
        "holdout": {"fraction": 0.25, "eval_on": eval_on},
    })


@pytest.mark.parametrize("eval_on", ["heldout", "train"])
def test_training_episodes_come_only_from_the_training_part(tmp_path, eval_on):
    cfg, splits = apply_holdout(_cfg(eval_on), tmp_path)
    assert cfg.env.env_kwargs()["episode"]["traces"] == [splits[0]["train"]]
    assert cfg.env.env_kwargs()["episode"]["duration_s"] == 30  # the rest of the block is kept
    assert cfg.eval_env_block().env_kwargs()["episode"]["traces"] == [splits[0][eval_on]]


def test_holdout_needs_traces(tmp_path):
    cfg = config_from_dict({"name": "h", "algo": "ppo", "env": {"id": "agents/TeacherToy-v0"},
                            "holdout": {"fraction": 0.25}})
    with pytest.raises(ValueError, match="toy env"):
        apply_holdout(cfg, tmp_path)
