"""A checkpoint used outside its training distribution still loads, but evaluate and deploy say so."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from agents.checkpoint import distribution_warnings, read_metadata, training_distribution
from arrow_rl.cli import app
from arrow_rl.cluster.base import SLO, ClusterInfo, Mode, Role
from arrow_rl.workload.workload import Workload

DEFAULT = "agents/checkpoints/default"


def test_the_shipped_checkpoint_knows_its_training_distribution():
    dist = training_distribution(read_metadata(DEFAULT))
    assert dist["presets"] == ["h100-llama3.1-70b-tp4"] and dist["cluster_sizes"] == list(range(4, 33))
    assert dist["slo_tiers"] == {"loose": {"ttft_s": 10.0, "tpot_s": 0.125}, "interactive": {"ttft_s": 3.0, "tpot_s": 0.05}}


def test_inside_the_distribution_nothing_is_said():
    meta = read_metadata(DEFAULT)
    assert distribution_warnings(meta, preset="h100-llama3.1-70b-tp4", num_instances=8,
                                 slo_ttft_s=10.0, slo_tpot_s=0.125) == []


def test_another_preset_size_or_slo_tier_is_each_named():
    meta = read_metadata(DEFAULT)
    lines = distribution_warnings(meta, preset="h100-llama3.1-8b-tp1", num_instances=2, slo_ttft_s=2.0,
                                  slo_tpot_s=0.05)
    text = " | ".join(lines)
    assert len(lines) == 3
    assert "h100-llama3.1-70b-tp4" in text and "4 to 32 instances, not 2" in text and "SLO tiers" in text


def test_deploy_warns_before_it_starts_on_the_two_instance_demo():
    from arrow_rl.cli.live import _deploy_warnings

    info = ClusterInfo(num_instances=2, preset="live", slo=SLO(2.0, 0.1), mode=Mode.DISAGGREGATED,
                       initial_roles=(Role.PREFILL, Role.DECODE))
    text = " | ".join(_deploy_warnings(DEFAULT, info, policy=None))
    assert "4 to 32 instances, not 2" in text and "no flip is legal" in text and "emulated preset" in text
    assert "no flip is legal" in " ".join(_deploy_warnings("arrow", info, policy=None))


def test_evaluate_prints_the_warning_for_a_checkpoint_outside_its_distribution(tmp_path):
    rng = np.random.default_rng(0)
    n = 20
    trace = tmp_path / "t.csv"
    Workload(np.cumsum(rng.exponential(0.5, n)), rng.integers(10, 400, n), rng.integers(1, 30, n)).to_csv(trace)
    r = CliRunner().invoke(app, ["evaluate", "--preset", "h100-llama3.1-8b-tp1", "--instances", "8", "--workload",
                                 str(trace), "--slo-ttft", "10", "--slo-tpot", "0.125", "--controllers", DEFAULT,
                                 "--max-evals", "2", "--seeds", "1", "--span", "5", "--warmup", "0"])
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "trained on preset 'h100-llama3.1-70b-tp4'" in r.output
