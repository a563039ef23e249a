"""``live-profile``'s prefill fit: robust to disturbed samples, never falling, and honest about noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from arrow_rl.cli import app
from arrow_rl.cluster.live.fake_vllm import FakeConfig, FakeVllm, ServerThread
from arrow_rl.cluster.live.profiles import ProfileError, fit_prefill, measure_instance, prefill_credibility

LENGTHS = [64, 128, 256, 512, 768]


def true_t(n: float) -> float:
    return 0.01 + 2e-5 * n + 1e-9 * n * n


def samples(rng, repeats=5, noise=0.03, outliers=2):
    xs = LENGTHS * repeats
    ts = [true_t(n) * (1 + noise * rng.standard_normal()) for n in xs]
    for k in rng.choice(len(xs), outliers, replace=False):
        ts[k] *= 8.0  # a request slowed several-fold by other load on the host
    return xs, ts


@pytest.mark.parametrize("seed", range(5))
def test_prefill_fit_recovers_the_curve_despite_slowed_samples(seed):
    xs, ts = samples(np.random.default_rng(seed))
    a, b, c = fit_prefill(xs, ts)
    for n in (64, 768):
        assert a * n * n + b * n + c == pytest.approx(true_t(n), rel=0.1)
    assert prefill_credibility(xs, ts, (a, b, c))[0]


@pytest.mark.parametrize("seed", range(5))
def test_prefill_fit_never_falls_with_length_even_on_noise(seed):
    rng = np.random.default_rng(seed)
    xs = LENGTHS * 3
    ts = [0.02 * (1 + 0.3 * rng.standard_normal()) for _ in xs]
    a, b, c = fit_prefill(xs, ts)
    assert a >= 0 and b >= 0 and c >= 0


def test_a_falling_or_flat_measurement_is_flagged_not_credible():
    xs = LENGTHS * 3
    falling = [0.03 - 1e-5 * n for n in xs]
    ok, why = prefill_credibility(xs, falling, fit_prefill(xs, falling))
    assert not ok and "does not grow" in why
    rng = np.random.default_rng(1)
    flat = [0.02 + 0.004 * float(rng.standard_normal()) for _ in xs]
    ok, why = prefill_credibility(xs, flat, fit_prefill(xs, flat))
    assert not ok


@pytest.fixture()
def fake_instance():
    # 1e-4 s/token: a 70 ms difference across the lengths stands out of a loaded box's timing noise
    fake = FakeVllm(name="p0", config=FakeConfig(prefill_s_per_token=1e-4), nixl_port=5650)
    with ServerThread(fake.app) as srv:
        yield srv.url


def test_measure_instance_fits_the_fake_prefill_cost(fake_instance):
    prof, points = measure_instance(fake_instance, "tiny", prefill_lengths=(64, 256, 768), repeats=3,
                                    decode_batches=(1, 2), decode_steps=4)
    assert prof.prefill_time(768) - prof.prefill_time(64) == pytest.approx(1e-4 * 704, rel=0.5)
    assert points["prefill_credible"] is True
    assert len(points["prefill"]) == 3 and len(points["prefill_samples"]) == 9


def test_measure_instance_names_an_unreachable_instance():
    with pytest.raises(ProfileError, match="127.0.0.1:9"):
        measure_instance("http://127.0.0.1:9", "tiny", repeats=1)


def test_live_profile_cli_writes_the_cache_and_fails_cleanly_on_a_dead_instance(fake_instance, tmp_path):
    out = tmp_path / "profiles.json"
    r = CliRunner().invoke(app, ["live-profile", "--instance", f"{fake_instance}=prefill", "--out", str(out),
                                 "--lengths", "64,256,768", "--batches", "1,2", "--repeats", "2"])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["profiles"]["0"]["prefill_b"] > 0 and "warnings" in data["meta"]
    r = CliRunner().invoke(app, ["live-profile", "--instance", "http://127.0.0.1:9=prefill", "--out", str(out)])
    assert r.exit_code == 2 and "cannot profile" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["live-profile", "--instance", f"{fake_instance}=prefill", "--lengths", "64,64"])
    assert r.exit_code == 2 and "--lengths" in r.output


def test_live_profile_warns_when_the_measured_prefill_time_does_not_grow(tmp_path):
    # An instance whose prefill gets 70 ms *faster* from 64 to 768 tokens: no timing noise turns
    # that into growth, so the fit must be reported as not credible (a loaded box once gave b < 0
    # with no warning at all).
    fake = FakeVllm(name="p0", config=FakeConfig(prefill_s_per_token=-1e-4, prefill_base_s=0.1), nixl_port=5652)
    out = tmp_path / "profiles.json"
    with ServerThread(fake.app) as srv:
        r = CliRunner().invoke(app, ["live-profile", "--instance", f"{srv.url}=prefill", "--out", str(out),
                                     "--lengths", "64,256,768", "--batches", "1,2", "--repeats", "2"])
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "not credible" in r.output and "does not grow" in r.output
    data = json.loads(out.read_text())
    assert data["meta"]["points"]["0"]["prefill_credible"] is False
    assert data["profiles"]["0"]["prefill_b"] >= 0  # the fit itself never falls
