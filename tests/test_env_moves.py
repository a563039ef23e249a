"""The three-role "moves" action codec (issue 12, envs/moves.py)."""

from __future__ import annotations

import itertools
from collections import deque

import numpy as np
import pytest

from arrow_rl.cluster.base import Flip, InstanceView, Role
from envs.config import ActionConfig
from envs.moves import PAIRS, MoveCodec, role_counts

P, D, M = Role.PREFILL, Role.DECODE, Role.MIXED


def views_for(counts, prefill_tokens=None):
    roles = [P] * counts[0] + [D] * counts[1] + [M] * counts[2]
    return [InstanceView(i, r, num_prefill=1 if prefill_tokens else 0,
                         prefill_tokens=(prefill_tokens[i] if prefill_tokens else 0), prefill_tokens_sq=0.0,
                         num_decode=0, decode_tokens=10 * i, kv_used_tokens=0, kv_capacity_tokens=1000)
            for i, r in enumerate(roles)]


def apply(views, flips):
    roles = {f.instance_id: f.role for f in flips}
    return [InstanceView(v.instance_id, roles.get(v.instance_id, v.role), v.num_prefill, v.prefill_tokens,
                         v.prefill_tokens_sq, v.num_decode, v.decode_tokens, v.kv_used_tokens, v.kv_capacity_tokens)
            for v in views]


def all_splits(n):
    return [(p, d, n - p - d) for p in range(n + 1) for d in range(n + 1 - p)]


@pytest.mark.parametrize("n", [4, 8, 32])
def test_action_space_size_does_not_depend_on_cluster_size(n):
    assert MoveCodec(ActionConfig(kind="moves"), n).space.n == 1 + 6 * 3


def test_k_is_a_fraction_of_the_cluster_rounded_up():
    assert MoveCodec(ActionConfig(kind="moves"), 4).ks == [1, 1, 1]
    assert MoveCodec(ActionConfig(kind="moves"), 32).ks == [2, 4, 8]
    assert MoveCodec(ActionConfig(kind="moves"), 20).ks == [2, 3, 5]


def test_describe_and_action_for_round_trip():
    codec = MoveCodec(ActionConfig(kind="moves"), 32)
    assert codec.describe(0) is None
    for a in range(1, codec.space.n):
        src, dst, k = codec.describe(a)
        assert (src, dst) in PAIRS
        assert codec.action_for(src, dst, k) == a


@pytest.mark.parametrize("n", [4, 7, 16])
def test_masks_keep_prefill_and_decode_both_empty_or_both_non_empty(n):
    codec = MoveCodec(ActionConfig(kind="moves"), n)
    for counts in all_splits(n):
        if not codec.valid_split(counts):
            continue
        mask = codec.masks_counts(counts)
        assert mask[0]
        for a in np.flatnonzero(mask[1:]) + 1:
            p, d, m = codec.result(int(a), counts)
            assert (p == 0) == (d == 0) and p + d + m == n
            assert (p >= 1 and d >= 1) or m == n   # the cluster keeps a serving path


@pytest.mark.parametrize("n", [4, 9, 16])
def test_every_valid_split_is_reachable_from_every_other(n):
    codec = MoveCodec(ActionConfig(kind="moves"), n)
    valid = [c for c in all_splits(n) if codec.valid_split(c)]
    for start in (valid[0], valid[len(valid) // 2], valid[-1]):
        seen, todo = {start}, deque([start])
        while todo:
            c = todo.popleft()
            for a in range(1, codec.space.n):
                r = codec.result(a, c)
                if r is not None and r not in seen:
                    seen.add(r)
                    todo.append(r)
        assert seen == set(valid)


def test_moving_the_last_prefill_instances_to_mixed_collapses_the_pair():
    codec = MoveCodec(ActionConfig(kind="moves"), 8)
    a = codec.action_for(P, M, 1)
    assert codec.result(a, (1, 3, 4)) == (0, 0, 8)


def test_opening_from_all_mixed_creates_both_pools():
    codec = MoveCodec(ActionConfig(kind="moves"), 8)
    assert codec.result(codec.action_for(M, P, 1), (0, 0, 8)) == (1, 1, 6)
    assert codec.result(codec.action_for(M, D, 2), (0, 0, 8)) == (1, 1, 6)
    assert codec.result(codec.action_for(P, D, 1), (0, 0, 8)) is None


def test_prefill_decode_moves_never_empty_a_pool():
    codec = MoveCodec(ActionConfig(kind="moves"), 32)
    a = codec.action_for(P, D, 8)
    assert codec.result(a, (3, 29, 0)) == (1, 31, 0)   # k clipped to what the pool can give
    assert codec.result(a, (1, 31, 0)) is None


@pytest.mark.parametrize("n", [4, 8, 13])
def test_flips_reach_exactly_the_split_the_action_names(n):
    codec = MoveCodec(ActionConfig(kind="moves"), n)
    for counts in all_splits(n):
        if not codec.valid_split(counts):
            continue
        views = views_for(counts)
        for a in range(codec.space.n):
            flips = codec.flips(a, views)
            want = codec.result(a, counts)
            if want is None:
                assert flips is None
                continue
            assert role_counts(apply(views, flips)) == want
            # the fewest flips: each flip moves one instance from a surplus pool to a deficit pool
            assert len(flips) == sum(max(0, y - x) for x, y in zip(counts, want))


def test_encode_round_trips_the_split_of_every_valid_action():
    codec = MoveCodec(ActionConfig(kind="moves"), 16)
    for counts in [(4, 4, 8), (8, 8, 0), (0, 0, 16), (1, 1, 14), (14, 2, 0)]:
        views = views_for(counts)
        for a in np.flatnonzero(codec.masks_for(views)):
            flips = codec.flips(int(a), views)
            assert codec.result(codec.encode(flips, views), counts) == codec.result(int(a), counts)


def test_encode_maps_a_prefill_to_decode_teacher_flip_onto_the_nearest_move():
    codec = MoveCodec(ActionConfig(kind="moves"), 8)
    views = views_for((4, 4, 0))
    assert codec.describe(codec.encode([Flip(0, D)], views)) == (P, D, 1)
    assert codec.encode([], views) == 0


def test_the_instance_leaving_prefill_is_the_one_with_least_resident_prefill_work():
    codec = MoveCodec(ActionConfig(kind="moves"), 4)
    views = views_for((2, 1, 1), prefill_tokens=[900, 100, 0, 0])
    flips = codec.flips(codec.action_for(P, M, 1), views)
    assert flips == [Flip(1, M)]


def test_invalid_fractions_are_refused():
    with pytest.raises(ValueError, match="move_fractions"):
        ActionConfig(kind="moves", move_fractions=[0.0])
    with pytest.raises(ValueError, match="duplicates"):
        ActionConfig(kind="moves", move_fractions=[0.25, 0.25])


def test_pairs_are_the_six_ordered_role_pairs():
    assert set(PAIRS) == {(a, b) for a, b in itertools.permutations((P, D, M), 2)}


@pytest.mark.parametrize("n,valid_per_pair", [(4, 1), (8, 2), (32, 3)])
def test_fractions_that_round_to_the_same_k_are_one_move_and_only_its_first_action_is_valid(n, valid_per_pair):
    """1/16 and 1/8 are the same move for N <= 8 (all three fractions for N = 4): the duplicates are
    masked in every split, and labels name the first action of each move."""
    codec = MoveCodec(ActionConfig(kind="moves"), n)
    F = len(codec.fractions)
    for counts in all_splits(n):
        if not codec.valid_split(counts):
            continue
        mask = codec.masks_counts(counts)
        for j in range(len(PAIRS)):
            kept = [i for i in range(F) if mask[1 + j * F + i]]
            assert len(kept) <= valid_per_pair
            assert len({codec.ks[i] for i in kept}) == len(kept)   # no two valid actions are the same move
    for a in range(1, codec.space.n):
        src, dst, k = codec.describe(a)
        assert codec.action_for(src, dst, k) == codec.canonical(a)
        assert codec.describe(codec.canonical(a)) == (src, dst, k)
    assert sum(codec.canonical(a) == a for a in range(1, codec.space.n)) == len(PAIRS) * valid_per_pair


@pytest.mark.parametrize("n", [4, 8])
def test_teacher_flips_are_encoded_to_the_canonical_action(n):
    codec = MoveCodec(ActionConfig(kind="moves"), n)
    views = views_for((n // 2, n // 2, 0))
    a = codec.encode([Flip(0, D)], views)
    assert a == codec.canonical(a) == codec.action_for(P, D, 1) == 1
    assert codec.masks_for(views)[a]


def test_distinct_moves_off_keeps_every_duplicate_valid_as_saved_configs_were_trained():
    from envs.config import EnvConfig

    codec = MoveCodec(ActionConfig(kind="moves", distinct_moves=False), 4)
    assert codec.masks_counts((2, 2, 0))[1:4].all()            # P->D at 1/16, 1/8, 1/4: all k = 1
    assert [codec.canonical(a) for a in (1, 2, 3)] == [1, 2, 3]
    saved = {"action": {"kind": "moves"}, "observation": {"kind": "pools"}}
    assert EnvConfig.from_saved(saved).action.distinct_moves is False
    assert EnvConfig.from_saved(saved).episode.end == "terminate"
    assert EnvConfig.from_dict(saved).action.distinct_moves is True
