"""The shared records and the Workload container behave as their docstrings promise."""

import math

import numpy as np
import pytest

from arrow_rl.cluster.base import SLO, RequestRecord, Role
from arrow_rl.perf.profile import InstanceProfile
from arrow_rl.workload.workload import Workload


def record(**kw) -> RequestRecord:
    base = dict(request_id=0, arrival_s=1.0, input_tokens=100, output_tokens=11,
                first_token_s=1.5, finish_s=2.5)
    base.update(kw)
    return RequestRecord(**base)


def test_tpot_is_decode_time_over_output_tokens_minus_one():
    # Arrow §4.3: TPOT = Σ_{j=2..m} t_j / (m − 1)
    assert record().tpot_s == pytest.approx(0.1)


def test_one_token_request_has_no_tpot_and_is_judged_on_ttft():
    r = record(output_tokens=1, finish_s=1.5)
    assert math.isnan(r.tpot_s)
    assert r.meets(SLO(ttft_s=1.0, tpot_s=0.01))
    assert not r.meets(SLO(ttft_s=0.1, tpot_s=0.01))


def test_meets_needs_both_slos():
    # Arrow §6.1: attainment counts requests meeting both TTFT and TPOT
    r = record()
    assert r.meets(SLO(ttft_s=0.5, tpot_s=0.1))
    assert not r.meets(SLO(ttft_s=0.4, tpot_s=0.1))
    assert not r.meets(SLO(ttft_s=0.5, tpot_s=0.09))


def test_rejected_or_unfinished_requests_never_meet_slo():
    assert not record(rejected=True, reject_reason="too long").meets(SLO(100, 100))
    assert not record(finish_s=math.nan).meets(SLO(100, 100))


def test_role_other():
    assert Role.PREFILL.other() is Role.DECODE and Role.DECODE.other() is Role.PREFILL


def test_slo_must_be_positive():
    with pytest.raises(ValueError):
        SLO(0.0, 0.1)


def test_workload_rate_scaling_divides_timestamps():
    w = Workload(np.array([0.0, 1.0, 4.0]), np.array([5, 6, 7]), np.array([1, 2, 3]))
    s = w.scaled(2.0)
    np.testing.assert_allclose(s.arrival_s, [0.0, 0.5, 2.0])
    assert s.mean_rate == pytest.approx(2 * w.mean_rate)


def test_workload_rejects_decreasing_arrivals_naming_row():
    with pytest.raises(ValueError, match="row 2"):
        Workload(np.array([0.0, 2.0, 1.0]), np.array([1, 1, 1]), np.array([1, 1, 1]), name="t")


def test_workload_window_rebases_to_zero():
    w = Workload(np.arange(10.0), np.full(10, 3), np.full(10, 4))
    win = w.window(2.0, 5.0)
    np.testing.assert_allclose(win.arrival_s, [0.0, 1.0, 2.0])


def test_profile_max_tokens_is_zero_when_intercept_misses_slo():
    # Arrow §5.3: MT(i, SLO_TPOT) = (SLO_TPOT − b)/a, 0 if b > SLO_TPOT
    p = InstanceProfile(1e-8, 1e-4, 1e-3, decode_slope=1e-6, decode_intercept=0.01)
    assert p.max_tokens(0.02) == pytest.approx(10_000)
    assert p.max_tokens(0.005) == 0.0


def test_profile_prefill_sum_matches_per_request_sum():
    p = InstanceProfile(2e-8, 1e-4, 3e-3, 1e-6, 0.01)
    lens = [100, 2000, 37]
    direct = sum(p.prefill_time(n) for n in lens)
    assert p.prefill_time_sum(len(lens), sum(lens), sum(n * n for n in lens)) == pytest.approx(direct)


def test_config_file_errors_name_the_file(tmp_path):
    from arrow_rl.config_io import ConfigFileError, read_config_mapping

    missing = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        read_config_mapping(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigFileError, match="bad.yaml: not valid YAML"):
        read_config_mapping(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigFileError, match="scalar.yaml: expected a mapping"):
        read_config_mapping(scalar)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_config_mapping(empty) == {}
