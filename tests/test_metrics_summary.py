"""``summarize`` and ``slo_attainment``: percentiles, TPOT definition, offered-request denominator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arrow_rl.cluster.base import SLO, RequestRecord
from arrow_rl.metrics import slo_attainment, summarize


def rec(rid, arrival, first, finish, out, rejected=False):
    return RequestRecord(request_id=rid, arrival_s=arrival, input_tokens=100, output_tokens=out,
                         first_token_s=first, finish_s=finish, rejected=rejected,
                         reject_reason="too long" if rejected else "")


RECORDS = [
    rec(0, 0.0, 0.5, 2.5, 11),     # ttft 0.5, tpot 0.2, e2e 2.5
    rec(1, 1.0, 1.2, 2.2, 6),      # ttft 0.2, tpot 0.2, e2e 1.2
    rec(2, 2.0, 4.0, 4.0, 1),      # ttft 2.0, no tpot (one token), e2e 2.0
    rec(3, 3.0, math.nan, math.nan, 10, rejected=True),
]


def test_summary_reports_mean_and_percentiles_over_finished_requests():
    s = summarize(RECORDS)
    assert s["num_requests"] == 4 and s["num_finished"] == 3 and s["num_rejected"] == 1
    assert s["ttft_mean"] == pytest.approx((0.5 + 0.2 + 2.0) / 3)
    assert s["ttft_p50"] == pytest.approx(0.5)
    assert s["e2e_p90"] == pytest.approx(np.percentile([2.5, 1.2, 2.0], 90))
    assert s["e2e_p99"] == pytest.approx(np.percentile([2.5, 1.2, 2.0], 99))


def test_tpot_excludes_one_token_requests():
    s = summarize(RECORDS)
    assert s["tpot_mean"] == pytest.approx(0.2) and s["tpot_p99"] == pytest.approx(0.2)


def test_throughput_spans_first_arrival_to_last_finish():
    s = summarize(RECORDS)
    assert s["throughput_rps"] == pytest.approx(3 / 4.0)
    assert s["output_tokens_per_s"] == pytest.approx((11 + 6 + 1) / 4.0)


def test_slo_attainment_needs_both_slos_and_counts_unfinished_as_misses():
    slo = SLO(ttft_s=1.0, tpot_s=0.25)
    # 0 and 1 meet both; 2 misses TTFT; 3 rejected; 2 more were offered but never ended
    assert slo_attainment(RECORDS, slo) == pytest.approx(2 / 4)
    assert slo_attainment(RECORDS, slo, num_offered=6) == pytest.approx(2 / 6)
    s = summarize(RECORDS, slo=slo, num_offered=6)
    assert s["slo_attainment"] == pytest.approx(2 / 6)
    assert s["num_unfinished"] == 2
    assert s["slo_ttft_attainment"] == pytest.approx(2 / 6)
    assert s["slo_tpot_attainment"] == pytest.approx(3 / 6)
    assert slo_attainment(RECORDS, SLO(1.0, 0.1)) == 0.0


def test_offered_count_cannot_be_smaller_than_the_records():
    with pytest.raises(ValueError, match="num_offered"):
        slo_attainment(RECORDS, SLO(1.0, 1.0), num_offered=2)


def test_empty_run_gives_nan_latencies_not_errors():
    s = summarize([], slo=SLO(1.0, 1.0), num_offered=3)
    assert math.isnan(s["ttft_mean"]) and s["num_finished"] == 0 and s["slo_attainment"] == 0.0
