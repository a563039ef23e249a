"""Action encodings: masks, Algorithm 3 instance choice, teacher-flip encoding (no cluster needed)."""

from __future__ import annotations

import pytest

from arrow_rl.cluster.base import Flip, InstanceView, Role
from envs.actions import ActionCodec
from envs.config import ActionConfig


def views(num_prefill, n=8, prefill_tokens=None, decode_tokens=None, num_decode=None, num_prefill_res=None):
    out = []
    for i in range(n):
        role = Role.PREFILL if i < num_prefill else Role.DECODE
        pt = (prefill_tokens or [0] * n)[i]
        out.append(InstanceView(i, role, (num_prefill_res or [1 if pt else 0] * n)[i], pt, float(pt) ** 2,
                                (num_decode or [0] * n)[i], (decode_tokens or [0] * n)[i], 0, 10_000))
    return out


@pytest.mark.parametrize("kind", ["discrete", "target"])
@pytest.mark.parametrize("min_pool", [1, 2])
def test_masks_never_allow_emptying_a_pool(kind, min_pool):
    """Arrow §5.5 / Alg. 3 guard: every unmasked action leaves both pools ≥ min_pool_size."""
    n = 8
    codec = ActionCodec(ActionConfig(kind=kind, max_flips_per_step=3, min_pool_size=min_pool, max_instances=10), n)
    for p in range(min_pool, n - min_pool + 1):
        mask = codec.masks(p)
        assert mask.any()
        for a in range(codec.space.n):
            if mask[a]:
                flips = codec.flips(a, views(p, n))
                assert flips is not None
                new_p = p + sum(1 if f.role is Role.PREFILL else -1 for f in flips)
                assert min_pool <= new_p <= n - min_pool
            else:
                assert codec.flips(a, views(p, n)) is None


def test_discrete_layout_is_noop_then_p2d_then_d2p():
    codec = ActionCodec(ActionConfig(kind="discrete", max_flips_per_step=2), 8)
    assert codec.space.n == 5
    assert [codec.delta(a) for a in range(5)] == [0, -1, -2, 1, 2]


def test_p2d_move_takes_the_instance_algorithm_3_picks():
    """Alg. 3: prefer a prefill instance still holding decode work, then least resident prefill work."""
    codec = ActionCodec(ActionConfig(max_flips_per_step=2), 8)
    v = views(4, prefill_tokens=[500, 100, 300, 900, 0, 0, 0, 0], num_decode=[0, 0, 0, 2, 0, 0, 0, 0])
    flips = codec.flips(2, v)  # move 2 P→D
    assert flips == [Flip(3, Role.DECODE), Flip(1, Role.DECODE)]


def test_d2p_move_takes_least_decode_work_first():
    codec = ActionCodec(ActionConfig(max_flips_per_step=2), 8)
    v = views(4, decode_tokens=[0, 0, 0, 0, 800, 200, 600, 400], num_decode=[0, 0, 0, 0, 1, 1, 1, 1])
    assert codec.flips(3, v) == [Flip(5, Role.PREFILL)]  # action K+1 = move 1 D→P


def test_target_action_moves_the_difference():
    codec = ActionCodec(ActionConfig(kind="target"), 8)
    assert codec.space.n == 9
    assert codec.flips(4, views(4)) == []
    assert len(codec.flips(6, views(4))) == 2
    assert all(f.role is Role.PREFILL for f in codec.flips(6, views(4)))
    assert codec.flips(0, views(4)) is None and codec.flips(8, views(4)) is None


def test_encode_maps_teacher_flips_to_the_matching_action():
    codec = ActionCodec(ActionConfig(max_flips_per_step=2), 8)
    v = views(4)
    assert codec.encode([], v) == 0
    assert codec.encode([Flip(1, Role.DECODE)], v) == 1
    assert codec.encode([Flip(5, Role.PREFILL)], v) == 3
    assert codec.encode([Flip(5, Role.PREFILL), Flip(6, Role.PREFILL), Flip(7, Role.PREFILL)], v) == 4  # clipped to K
    assert codec.encode([Flip(1, Role.PREFILL)], v) == 0  # already prefill: no change


def test_encode_then_flips_round_trips_the_count():
    codec = ActionCodec(ActionConfig(kind="target"), 8)
    v = views(4)
    a = codec.encode([Flip(0, Role.DECODE), Flip(1, Role.DECODE)], v)
    assert a == 2 and len(codec.flips(a, v)) == 2


def test_encode_respects_the_pool_guard():
    codec = ActionCodec(ActionConfig(max_flips_per_step=3), 8)
    v = views(2)
    # a teacher trying to move 2 P→D from a 2-instance prefill pool can only move 1
    assert codec.encode([Flip(0, Role.DECODE), Flip(1, Role.DECODE)], v) == 1
