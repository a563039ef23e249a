"""The target-split action codec (``action.kind: splits``, envs/split_codec.py): its lattice, its
rounding to instances, what an action does to a cluster, the labels teachers give in it, and a
checkpoint trained in it deploying on any cluster size."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from agents.config import load_config
from agents.train import checkpoint_metadata
from arrow_rl.cluster.base import Flip, InstanceView, Role
from envs import PDClusterEnv
from envs.config import ActionConfig, EnvConfig
from envs.moves import MoveCodec, role_counts
from envs.split_codec import SplitCodec, lattice_counts, split_lattice, three_role_codec

SPLITS = {"action": {"kind": "splits"}, "observation": {"kind": "pools"}}
SMALL = {**SPLITS, "preset": "h100-llama3.1-70b-tp4", "slo_ttft_s": 10.0, "slo_tpot_s": 0.125,
         "teacher": "oracle-split",
         "episode": {"traces": ["azure-conv"], "duration_s": 20, "drain_s": 5, "rate_scale": [8.0, 8.0]}}


def views(p: int, d: int, m: int) -> list[InstanceView]:
    roles = [Role.PREFILL] * p + [Role.DECODE] * d + [Role.MIXED] * m
    return [InstanceView(i, r, 0, 0, 0.0, 0, 0, 0, 1000) for i, r in enumerate(roles)]


def apply(instances: list[InstanceView], flips: list[Flip]) -> list[InstanceView]:
    roles = {f.instance_id: Role(f.role) for f in flips}
    return [replace(v, role=roles.get(v.instance_id, v.role)) for v in instances]


def test_the_lattice_holds_every_valid_split_of_the_grid_once():
    lattice = split_lattice(8)
    assert len(lattice) == len(set(lattice)) == 29   # P, D >= 1 with P + D <= 8, and all-MIXED
    assert all(sum(pt) == 8 and (pt[0] == 0) == (pt[1] == 0) for pt in lattice)
    assert (0, 0, 8) in lattice and (7, 1, 0) in lattice and (1, 7, 0) in lattice
    assert len(split_lattice(4)) == 7


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 13, 16, 32])
@pytest.mark.parametrize("min_pool", [1, 2])
def test_rounding_to_instances_keeps_the_pool_rules(n, min_pool):
    if 2 * min_pool > n:
        return
    codec = MoveCodec(ActionConfig(kind="moves", min_pool_size=min_pool), n)
    for pt in split_lattice(8):
        counts = lattice_counts(pt, 8, n, min_pool)
        assert counts is not None and sum(counts) == n and codec.valid_split(counts), (pt, n, counts)
        assert (counts[0] == 0) == (pt[0] == 0)   # a pool the lattice opens stays open


def test_the_space_does_not_depend_on_the_cluster_size():
    sizes = {int(SplitCodec(ActionConfig(kind="splits"), n).space.n) for n in (4, 8, 17, 32)}
    assert sizes == {30}
    assert int(SplitCodec(ActionConfig(kind="splits", split_grid=4), 8).space.n) == 8


def test_an_action_reaches_the_split_it_names_at_once_and_hold_flips_nothing():
    codec = SplitCodec(ActionConfig(kind="splits"), 8)
    start = views(4, 4, 0)
    assert codec.flips(0, start) == []
    assert codec.masks_for(start).all()   # every lattice split is reachable from every split
    for a in range(1, int(codec.space.n)):
        flips = codec.flips(a, start)
        assert role_counts(apply(start, flips)) == codec.target_of(a)
        assert len(flips) == sum(abs(x - y) for x, y in zip(codec.target_of(a), (4, 4, 0))) // 2
    here = codec.nearest_action((4, 4, 0), (4, 4, 0))
    assert codec.target_of(here) == (4, 4, 0) and codec.flips(here, start) == []
    assert codec.flips(int(codec.space.n), start) is None   # outside the space


def test_labels_name_the_wanted_split_whatever_the_current_one():
    codec = SplitCodec(ActionConfig(kind="splits"), 8)
    for current in [(1, 7, 0), (4, 4, 0), (0, 0, 8), (2, 1, 5)]:
        a = codec.nearest_action(current, (6, 2, 0))
        assert codec.target_of(a) == (6, 2, 0)
    # off the lattice (16 instances, units of 2): an off-lattice split that is held is "hold" ...
    big = SplitCodec(ActionConfig(kind="splits"), 16)
    assert big.nearest_action((3, 5, 8), (3, 5, 8)) == 0
    # ... and an off-lattice target is the nearest lattice split
    assert sum(abs(x - y) for x, y in zip(big.target_of(big.nearest_action((8, 8, 0), (3, 5, 8))), (3, 5, 8))) == 2
    # encode (a P/D teacher's flips) goes through the same rule
    start = views(4, 4, 0)
    assert codec.target_of(codec.encode([Flip(0, Role.DECODE)], start)) == (3, 5, 0)


def test_config_pairs_splits_with_the_pool_observation_and_the_split_teacher():
    assert isinstance(three_role_codec(ActionConfig(kind="splits"), 8), SplitCodec)
    assert type(three_role_codec(ActionConfig(kind="moves"), 8)) is MoveCodec
    with pytest.raises(ValueError, match="not a three-role encoding"):
        three_role_codec(ActionConfig(kind="discrete"), 8)
    with pytest.raises(ValidationError, match="'splits' with observation.kind 'pools'"):
        EnvConfig(action={"kind": "splits"})
    with pytest.raises(ValidationError, match="oracle-moves"):
        EnvConfig(**{**SMALL, "teacher": "oracle-moves"})
    with pytest.raises(ValidationError, match="split_grid"):
        ActionConfig(kind="splits", split_grid=1)


def test_the_split_teacher_labels_its_target_on_every_decision():
    # at the training cadence (a decision every 5 s, the teacher's) every decision is labelled
    env = PDClusterEnv({**SMALL, "num_instances": 8, "initial_prefill": 1, "action": {"kind": "splits", "decision_every": 5},
                        "teacher_config": {"horizon_s": 15.0, "replan_s": 10.0}})
    assert isinstance(env.codec, SplitCodec)
    _obs, info = env.reset(seed=0)
    labels = 0
    while True:
        if info["decision_step"]:
            a = info["teacher_action"]
            assert info["action_mask"][a]
            assert env.codec.target_of(a) == env.teacher.target   # 8 instances: every target is on the lattice
            labels += 1
        _obs, _r, term, trunc, info = env.step(info["teacher_action"])
        assert info["split"] == env.teacher.target   # reached at once, held until the next plan
        if term or trunc:
            break
    assert labels >= 4 and info["episode_stats"]["flip_count"] > 0


def test_the_training_config_records_the_encoding():
    meta = checkpoint_metadata(load_config(Path(__file__).resolve().parents[1] / "configs" / "train"
                                           / "generalist_splits.yaml"))
    enc = meta["action_encoding"]
    assert (enc["kind"], enc["n"], enc["split_grid"]) == ("splits", 30, 8)
    assert meta["training_distribution"]["roles"] == ["prefill", "decode", "mixed"]
    # deploying it on 4 to 32 instances: tests/test_agents_generalist.py (both encodings)


def test_a_deploy_time_margin_holds_against_the_action_naming_the_current_split():
    import numpy as np

    from agents.inference import hold_unless_confident

    codec = SplitCodec(ActionConfig(kind="splits"), 8)
    here = views(4, 4, 0)
    hold = codec.hold_for(here)
    assert codec.target_of(hold) == (4, 4, 0)
    assert SplitCodec(ActionConfig(kind="splits"), 16).hold_for(views(3, 5, 8)) == 0   # off the lattice
    assert MoveCodec(ActionConfig(kind="moves"), 8).hold_for(here) == 0
    scores = np.zeros(int(codec.space.n))
    scores[hold], scores[5] = 1.0, 1.5     # another split, preferred by 0.5 log-odds only
    mask = codec.masks_for(here)
    assert hold_unless_confident(scores, mask, hold, 1.0) == hold
    assert hold_unless_confident(scores, mask, hold, 0.0) == 5
