"""``summarize`` reproduces the statistics table of the bundled-traces README."""

import numpy as np
import pytest

from arrow_rl.workload import Workload, load_bundled, summarize


def test_azure_code_statistics_match_the_readme_table():
    # data/README.md: 8,819 rows, 3,435.9 s, 2.57 req/s, CV 13.15, dispersion 13.2, input median 1469
    s = summarize(load_bundled("azure-code"))
    assert s.rows == 8819
    assert s.span_s == pytest.approx(3435.9, abs=0.05)
    assert s.mean_rate == pytest.approx(2.57, abs=0.005)
    assert s.interarrival_cv == pytest.approx(13.15, abs=0.005)
    assert s.dispersion_1s == pytest.approx(13.2, abs=0.05)
    assert (s.input.median, s.input.max, s.output.median, s.output.max) == (1469, 7437, 13, 1899)


def test_dispersion_counts_requests_per_second():
    # 4 arrivals in second 0, none in second 1, 2 in second 2: counts [4, 0, 2], var/mean = (8/3)/2
    w = Workload(np.array([0.0, 0.1, 0.2, 0.3, 2.0, 2.5]), np.ones(6), np.ones(6))
    s = summarize(w)
    assert s.dispersion_1s == pytest.approx((8 / 3) / 2)
    assert s.max_per_second == 4


def test_evenly_spaced_arrivals_have_zero_interarrival_cv():
    w = Workload(np.arange(10) * 0.5, np.ones(10), np.ones(10))
    assert summarize(w).interarrival_cv == pytest.approx(0.0)
