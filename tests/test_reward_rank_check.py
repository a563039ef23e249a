"""scripts/reward_rank_check.py's bookkeeping (no simulation): which policy stands for each
leaderboard controller, the paired tie rule, and the refusal of held-out scenarios."""

from __future__ import annotations

import json

import pytest

from scripts import reward_rank_check as rrc


@pytest.fixture(scope="module")
def board() -> dict:
    return json.loads(rrc.LEADERBOARD.read_text())


def test_stand_ins_for_the_leaderboard_controllers(board):
    entries, left = rrc.entries_for("azure-conv-70b-x8", board, 8, None)
    by_key = {e.key: e for e in entries}
    assert by_key["arrow"].specs == ["arrow-interval"]
    assert by_key["colocated"].specs == ["static:0:0:8"] and by_key["colocated"].three_roles
    assert by_key["static-tuned"].specs == ["static:0:0:8"]
    # static-oracle's per-seed picks differ from static-tuned's here: the best of both splits
    assert set(by_key["static-oracle"].specs) == {"static:6", "static:0:0:8"}
    assert by_key[rrc.CHECKPOINT_KEY].three_roles
    assert left == []


def test_an_identical_static_oracle_is_left_out(board):
    entries, left = rrc.entries_for("mooncake-70b-x8", board, 8, None)
    assert "static-oracle" not in {e.key for e in entries}
    assert any(note.startswith("static-oracle") for note in left)


def test_paired_sign_calls_noise_a_tie():
    assert rrc.paired_sign([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0
    assert rrc.paired_sign([10.0, 11.0, 12.0], [1.0, 2.0, 3.1]) == 1
    assert rrc.paired_sign([1.0, -1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]) == 0


def test_concordance_counts_agreeing_opposite_and_tied_pairs():
    a, b, c = [3.0, 3.1, 2.9], [1.0, 1.1, 0.9], [1.0, 1.1, 0.9]
    agree, disagree, tied = rrc.concordance([a, b, c], [[5, 5.1, 4.9], [1, 1.1, 0.9], [6, 6.1, 5.9]])
    assert (agree, disagree, tied) == (1, 1, 1)


def test_held_out_scenarios_are_refused():
    with pytest.raises(SystemExit):
        rrc.main(["--scenarios", "reasoning-70b-x8", "-k", "1"])
