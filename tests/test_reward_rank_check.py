"""scripts/reward_rank_check.py's bookkeeping (no simulation): which policy stands for each
leaderboard controller, the paired tie rule, and the refusal of held-out scenarios."""

from __future__ import annotations

import json
import math

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


def _trace(steps, lam=1.0, attainment=0.5, offered=None):
    return {"offered_per_step": lam, "steps": steps, "attainment": attainment,
            "offered": offered if offered is not None else int(lam * len(steps))}


def test_trace_return_recomputes_the_env_formula():
    from envs.config import RewardConfig

    t = _trace([[2, 0, 4, 0], [0, 2, 0, 1]], lam=2.0, attainment=0.5)
    cur = RewardConfig()
    assert rrc.trace_return(t, cur) == pytest.approx((2 - 0.05 * 4) / 2 + (0 - 2) / 2)
    capped = RewardConfig(pending_cap=1.0)
    assert rrc.trace_return(t, capped) == pytest.approx((2 - 0.05 * 2) / 2 + (0 - 2) / 2)
    target = RewardConfig(target_weight=1.0, target_width=0.02)
    assert rrc.trace_return(_trace([[1, 0, 0, 0]] * 10, attainment=1.0), target) == pytest.approx(10 + 10 / (1 + math.exp(-5.0)))


def test_the_oracle_takes_its_per_episode_best_under_each_variant():
    from envs.config import RewardConfig

    # spec a: served but a deep backlog; spec b: a worse attainment, no backlog
    a = _trace([[1, 0, 100, 0]], attainment=1.0)
    b = _trace([[0, 1, 0, 0]], attainment=0.0)
    ctrl = {"traces": {"a": [a], "b": [b]}}
    assert rrc.variant_returns(ctrl, RewardConfig()) == [pytest.approx(-1.0)]          # b wins
    assert rrc.variant_returns(ctrl, RewardConfig(pending_cap=1.0)) == [pytest.approx(0.95)]  # a wins


def _load_report():
    """Two scenarios, three controllers, two episodes each: the current reward ranks them against
    the rates (the backlog dominates), the bounded one with them."""
    def ctrl(att, backlog, rate):
        good = int(10 * att)
        eps = [_trace([[good, 10 - good, backlog, 0]], lam=10.0, attainment=att) for _ in range(2)]
        return {"traces": {"x": eps}, "serving_rate": rate}
    ctrls = {"arrow": ctrl(1.0, 2000, 3.0), "dynamo": ctrl(0.8, 500, 2.0), "colocated": ctrl(0.5, 0, 1.0)}
    return {"scenarios": {s: {"config": {}, "controllers": ctrls} for s in ("azure-conv-70b-x8", "mooncake-70b-x8")}}


def test_score_variant_ranks_variants_on_the_same_episodes(board, monkeypatch):
    fake = {"scenarios": {s: {"controllers": {k: {"per_seed": [1.0, 1.0]} for k in ("arrow", "dynamo", "colocated")}}
                          for s in ("azure-conv-70b-x8", "mooncake-70b-x8")}}
    cur = rrc.score_variant(_load_report(), fake, {}, n_boot=20)
    cap = rrc.score_variant(_load_report(), fake, {"pending_cap": 1.0}, n_boot=20)
    assert cur["pooled_spearman"] == pytest.approx(-1.0)
    assert cap["pooled_spearman"] == pytest.approx(1.0)
    assert cap["pooled_bootstrap90"] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert set(cap["scenarios"]) == {"azure-conv-70b-x8", "mooncake-70b-x8"}


def test_variants_file_is_checked_against_the_reward_config(tmp_path):
    p = tmp_path / "v.yaml"
    p.write_text("bad: {no_such_weight: 1}\n")
    with pytest.raises(Exception):
        rrc.read_variants(p)
    assert next(iter(rrc.read_variants(None))) == "default"


def test_reports_round_trip_compressed(tmp_path):
    report = {"loads": {}, "x": [1, 2]}
    rrc.write_report(report, tmp_path / "r.json.gz")
    assert rrc.read_report(tmp_path / "r.json.gz") == report
