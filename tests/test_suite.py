"""Suite files (schema, errors, the train/test split) and ``arrow-rl suite run`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from arrow_rl.cli import app
from arrow_rl.evaluation.suite_spec import SUITES_DIR, SuiteError, load_suite, read_suite_spec

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_suite.yaml"
TUNING_CONFIG_DIRS = [ROOT / "configs" / d for d in ("train", "env", "arrow")]


def write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "suite.yaml"
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    return p


def tiny_data() -> dict:
    return yaml.safe_load(TINY.read_text(encoding="utf-8"))


def test_standard_suite_covers_the_required_settings():
    suite = load_suite("standard")
    presets = {s.emulator_config.preset for s in suite.scenarios}
    sizes = {s.emulator_config.num_instances for s in suite.scenarios}
    tiers = {s.slo_tier for s in suite.scenarios}
    labels = {s.workload_label for s in suite.scenarios}
    assert {"h100-llama3.1-70b-tp4", "h100-llama3.1-8b-tp1"} <= presets
    assert {8, 16} <= sizes and {"loose", "interactive"} <= tiers
    assert {"azure-code", "azure-conv", "mooncake", "generator:phase_shift", "generator:stages",
            "generator:mmpp", "generator:gamma"} <= labels
    assert {s.split for s in suite.scenarios} == {"train", "test"}
    assert all(len(s.protocol.seeds) >= 3 for s in suite.scenarios)
    assert suite.protocol.rate_mode == "superpose"


def test_shipped_training_and_tuning_configs_never_name_a_test_scenario():
    spec = read_suite_spec(SUITES_DIR / "standard.yaml")
    test = [s for s in spec.scenarios if s.split == "test"]
    assert test
    texts = {p: p.read_text(encoding="utf-8") for d in TUNING_CONFIG_DIRS for p in d.rglob("*") if p.is_file()}
    generators = []
    for p, text in texts.items():
        if p.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
            gen = (data.get("episode") or {}).get("generator") if isinstance(data, dict) else None
            if gen:
                generators.append(gen)
    for s in test:
        for p, text in texts.items():
            assert s.name not in text, f"{p} names held-out scenario {s.name}"
            if isinstance(s.workload, str):
                assert s.workload not in text, f"{p} uses held-out workload {s.workload}"
        if isinstance(s.workload, dict):
            assert s.workload not in generators, f"a training config reuses {s.name}'s generator"


def test_test_scenarios_use_no_trace_a_shipped_config_trains_on():
    spec = read_suite_spec(SUITES_DIR / "standard.yaml")
    for s in spec.scenarios:
        if s.split == "test":
            assert isinstance(s.workload, dict), f"{s.name}: a held-out scenario must not replay a training trace"
            assert "trace" not in json.dumps(s.workload), f"{s.name}: lengths resampled from a training trace"


def test_bad_field_names_file_scenario_and_field(tmp_path):
    data = tiny_data()
    data["scenarios"][1]["instances"] = 1
    with pytest.raises(SuiteError, match=r"suite.yaml: scenarios\[1\] \(tiny-trace\)\.instances"):
        read_suite_spec(write(tmp_path, data))


def test_unknown_slo_tier_is_named(tmp_path):
    data = tiny_data()
    data["scenarios"][0]["slo"] = "gold"
    with pytest.raises(SuiteError, match="slo 'gold' is not one of slo_tiers"):
        read_suite_spec(write(tmp_path, data))


def test_fewer_than_three_seeds_is_refused(tmp_path):
    data = tiny_data()
    data["protocol"]["seeds"] = [0, 1]
    with pytest.raises(SuiteError, match="protocol.seeds"):
        read_suite_spec(write(tmp_path, data))


def test_unknown_preset_names_the_scenario(tmp_path):
    data = tiny_data()
    data["scenarios"][0]["preset"] = "tpu-v9"
    with pytest.raises(SuiteError, match=r"scenarios\[0\] \(tiny-poisson\).*unknown preset 'tpu-v9'"):
        load_suite(str(write(tmp_path, data)))


def test_bad_inline_generator_names_the_field(tmp_path):
    data = tiny_data()
    data["scenarios"][0]["workload"]["rate"] = -1
    with pytest.raises(SuiteError, match=r"tiny-poisson\): workload: rate"):
        load_suite(str(write(tmp_path, data)))


def test_unknown_suite_lists_shipped_ones():
    with pytest.raises(SuiteError, match="standard"):
        load_suite("nonesuch")


def test_quick_applies_the_suites_quick_section():
    assert load_suite(str(TINY), quick=True).protocol.rel_tol == 0.5
    assert load_suite(str(TINY)).protocol.rel_tol == 0.25


@pytest.mark.slow
def test_suite_run_writes_json_table_plot_and_leaderboard(tmp_path):
    out, md, plots, readme = tmp_path / "s.json", tmp_path / "lb.md", tmp_path / "plots", tmp_path / "R.md"
    readme.write_text("# R\n<!-- leaderboard:summary:start -->\nOLDBLOCK\n<!-- leaderboard:summary:end -->\nafter\n")
    res = CliRunner().invoke(app, ["suite", "run", "--suite", str(TINY), "--controllers", "arrow,static-tuned,colocated",
                                   "--json", str(out), "--markdown", str(md), "--plots", str(plots),
                                   "--update-readme", str(readme)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert set(data["scenarios"]) == {"tiny-poisson", "tiny-trace"}
    row = data["scenarios"]["tiny-poisson"]["controllers"]["colocated"]
    assert set(row) >= {"serving_rate", "ci95", "per_seed", "brackets", "flips_per_min", "paired"}
    assert len(row["per_seed"]) == len(row["brackets"]) == 3
    assert row["ci95"][0] <= row["serving_rate"] <= row["ci95"][1]
    assert set(row["paired"]["arrow"]) >= {"ratio", "ci95", "verdict"} and row["paired"]["best_deployable"]["rival"]
    assert set(data["summary"]["colocated"]) >= {"geomean_ratio_to_arrow", "ci95", "wins", "ties", "losses"}
    assert "| tiny-poisson" in md.read_text() and (plots / "suite_serving_rate.png").stat().st_size > 0
    assert "winner" in res.output
    text = readme.read_text()
    assert "OLDBLOCK" not in text and "| tiny-trace" in text and text.endswith("after\n")
    # `suite report` renders the saved result again: the same tables, nothing re-run.
    md2 = tmp_path / "lb2.md"
    res = CliRunner().invoke(app, ["suite", "report", "--json", str(out), "--suite", str(TINY), "--markdown", str(md2)])
    assert res.exit_code == 0, res.output
    tables = lambda p: [l for l in p.read_text().splitlines() if l.startswith("|")]  # noqa: E731
    assert tables(md2) == tables(md)


def _saved_result() -> dict:
    """A saved suite result (as ``suite run --json`` writes it) of two controllers on tiny-poisson,
    built from per-seed results without simulating."""
    from arrow_rl.controllers.splits import Split
    from arrow_rl.evaluation.seeded_search import SeedResult
    from arrow_rl.evaluation.suite import ScenarioOutcome, SuiteResult, outcome_of

    suite = load_suite(str(TINY))
    sc = suite.scenarios[0]

    def seeds(rates, split=None):
        return [SeedResult(k, r, r, False, 0.5, 600.0, 3, split, {r / 1.1: 0.95, r * 1.02: 0.85}, (r / 1.01, r * 1.02))
                for k, r in enumerate(rates)]
    row = {"colocated": outcome_of("colocated", seeds([1.0, 2.0, 3.0]), 1.0, 1.0),
           "static-tuned": outcome_of("static-tuned", seeds([4.0, 4.0, 4.0], Split(1, 2)), 1.0, 1.0)}
    kept = type(suite)(suite.name, suite.path, suite.description, [sc], suite.protocol)
    res = SuiteResult(kept, ["colocated", "static-tuned"], {sc.name: ScenarioOutcome(sc, row)}, False, wall_s=60,
                      cpu_s=100, simulations=18, settings={"jobs": 2, "controllers": ["colocated", "static-tuned"]})
    return json.loads(json.dumps(res.to_json()))


def test_suite_report_renders_a_saved_result_without_running(tmp_path):
    src, md = tmp_path / "s.json", tmp_path / "lb.md"
    src.write_text(json.dumps(_saved_result()))
    res = CliRunner().invoke(app, ["suite", "report", "--json", str(src), "--suite", str(TINY), "--markdown", str(md)])
    assert res.exit_code == 0, res.output
    text = md.read_text()
    assert "| tiny-poisson | train | 2 ± 2 | 4 ± 0 (1P:2D) | tie: static-tuned, colocated |" in text
    assert "--controllers colocated,static-tuned" in text and "--jobs 2" in text


def test_suite_report_names_what_is_wrong_with_the_file(tmp_path):
    src = tmp_path / "s.json"
    bad = _saved_result()
    bad["scenarios"]["no-such-scenario"] = bad["scenarios"].pop("tiny-poisson")
    src.write_text(json.dumps(bad))
    res = CliRunner().invoke(app, ["suite", "report", "--json", str(src), "--suite", str(TINY)])
    assert res.exit_code == 2 and "no-such-scenario" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["suite", "report", "--json", str(tmp_path / "none.json"), "--suite", str(TINY)])
    assert res.exit_code == 2 and f"--json {tmp_path / 'none.json'}: cannot read" in res.output
    src.write_text("[1, 2]")
    res = CliRunner().invoke(app, ["suite", "report", "--json", str(src), "--suite", str(TINY)])
    assert res.exit_code == 2 and "not an arrow-rl suite result" in res.output


def _split_saved_result(tmp_path):
    """The saved result as two files: one per controller (a new controller run after the others)."""
    whole = _saved_result()
    parts = []
    for c in ("colocated", "static-tuned"):
        part = json.loads(json.dumps(whole))
        part["settings"]["controllers"] = [c]
        part["scenarios"]["tiny-poisson"]["controllers"] = {c: whole["scenarios"]["tiny-poisson"]["controllers"][c]}
        path = tmp_path / f"{c}.json"
        path.write_text(json.dumps(part))
        parts.append(path)
    return whole, parts


def test_suite_report_merges_results_of_other_controllers(tmp_path):
    whole, (a, b) = _split_saved_result(tmp_path)
    (tmp_path / "whole.json").write_text(json.dumps(whole))
    md_whole, md_merged, out = tmp_path / "w.md", tmp_path / "m.md", tmp_path / "merged.json"
    for args, md in ((["--json", str(tmp_path / "whole.json")], md_whole), (["--json", str(a), "--json", str(b)], md_merged)):
        res = CliRunner().invoke(app, ["suite", "report", *args, "--suite", str(TINY), "--markdown", str(md),
                                       "--out", str(out)])
        assert res.exit_code == 0, res.output
    tables = lambda p: [l for l in p.read_text().splitlines() if l.startswith("|")]  # noqa: E731
    assert tables(md_merged) == tables(md_whole)
    assert "summed over 2 runs merged" in md_merged.read_text()
    merged = json.loads(out.read_text())
    assert merged["settings"]["simulations"] == 36 and merged["settings"]["merged_from"] == 2


def test_suite_report_replace_lets_a_rerun_replace_its_cells(tmp_path):
    whole, (a, b) = _split_saved_result(tmp_path)
    rerun = json.loads(b.read_text())
    cell = rerun["scenarios"]["tiny-poisson"]["controllers"]["static-tuned"]
    cell.update(per_seed=[6.0, 6.0, 6.0], serving_rate=6.0, simulations=5)
    for seed in cell["seeds"]:
        seed["rate"] = 6.0
    b2 = tmp_path / "rerun.json"
    b2.write_text(json.dumps(rerun))
    whole_path, out = tmp_path / "whole.json", tmp_path / "m.json"
    whole_path.write_text(json.dumps(whole))
    res = CliRunner().invoke(app, ["suite", "report", "--json", str(whole_path), "--json", str(b2), "--suite", str(TINY),
                                   "--replace", "--out", str(out)])
    assert res.exit_code == 0, res.output
    merged = json.loads(out.read_text())
    assert merged["scenarios"]["tiny-poisson"]["controllers"]["static-tuned"]["per_seed"] == [6.0, 6.0, 6.0]
    assert merged["settings"]["simulations"] == 18 - 9 + 18   # the replaced cell's 9 simulations left the cost


def test_suite_report_refuses_to_merge_what_does_not_compare(tmp_path):
    _, (a, b) = _split_saved_result(tmp_path)
    res = CliRunner().invoke(app, ["suite", "report", "--json", str(a), "--json", str(a), "--suite", str(TINY)])
    assert res.exit_code == 2 and "controller 'colocated' is also in" in res.output and "Traceback" not in res.output
    other = json.loads(b.read_text())
    other["quick"] = True
    b.write_text(json.dumps(other))
    res = CliRunner().invoke(app, ["suite", "report", "--json", str(a), "--json", str(b), "--suite", str(TINY)])
    assert res.exit_code == 2 and f"--json {b}: quick True differs" in res.output
    other["quick"] = False
    other["settings"]["protocol"] = "seeds [0]"
    b.write_text(json.dumps(other))
    res = CliRunner().invoke(app, ["suite", "report", "--json", str(a), "--json", str(b), "--suite", str(TINY)])
    assert res.exit_code == 2 and "settings.protocol" in res.output


def test_suite_run_rejects_unknown_controller_before_simulating(tmp_path):
    res = CliRunner().invoke(app, ["suite", "run", "--suite", str(TINY), "--controllers", "nope",
                                   "--json", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "unknown controller 'nope'" in res.output
    assert "jobs" not in res.output  # no empty progress line left under the error


def test_suite_run_rejects_unknown_rate_mode(tmp_path):
    res = CliRunner().invoke(app, ["suite", "run", "--suite", str(TINY), "--rate-mode", "squash",
                                   "--json", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "--rate-mode must be scale or superpose" in res.output


def test_a_failing_job_names_its_scenario_and_controller(monkeypatch):
    import arrow_rl.evaluation.suite as suite_mod

    def boom(scenario, controller, speedup, arrow_config, notify):
        raise ValueError("prefix_offsets must be non-decreasing")

    monkeypatch.setattr(suite_mod, "_job", boom)
    with pytest.raises(ValueError, match=r"scenario tiny-\w+, controller colocated: prefix_offsets"):
        suite_mod.run_suite(load_suite(str(TINY)), ["colocated"], jobs=1)


def test_a_checkpoint_that_does_not_fit_a_scenario_is_reported_not_applicable(tmp_path):
    """An 8-instance P/D checkpoint (padded observation) on a 16-instance scenario: n/a, found before
    any simulation, and the rest of the suite still runs."""
    from agents.config import config_from_dict
    from agents.train import train
    from arrow_rl.evaluation.leaderboard import tables_markdown
    from arrow_rl.evaluation.suite import controller_misfit, result_from_json, run_suite

    data = tiny_data()
    big = dict(data["scenarios"][0], name="tiny-x16", instances=16)
    data["scenarios"] = [big]
    suite = load_suite(str(write(tmp_path, data)), quick=True)
    cfg = config_from_dict({
        "name": "pd8", "algo": "maskable_ppo", "n_envs": 1, "n_timesteps": 64, "n_steps": 64, "batch_size": 32,
        "n_epochs": 1, "policy_kwargs": {"net_arch": [8]}, "eval": {"enabled": False}, "tensorboard": False,
        "env": {"id": "arrow_rl/PDCluster-v0", "episode": {"traces": ["azure-conv"], "duration_s": 10.0, "drain_s": 2.0}},
    })
    ckpt = str(train(cfg, run_root=tmp_path / "runs", progress=False).final_dir)
    assert controller_misfit(suite.scenarios[0], "colocated") is None
    why = controller_misfit(suite.scenarios[0], ckpt)
    assert why is not None and "does not fit this cluster" in why
    res = run_suite(suite, ["colocated", ckpt])
    sc = res.scenarios["tiny-x16"]
    assert list(sc.controllers) == ["colocated"] and sc.not_applicable == {ckpt: why}
    row = res.summary()[ckpt]
    assert (row["geomean_ratio_to_arrow"], row["wins"], row["ties"], row["losses"], row["not_applicable"]) == \
        (None, 0, 0, 0, 1)
    payload = json.loads(json.dumps(res.to_json()))
    assert payload["scenarios"]["tiny-x16"]["not_applicable"] == {ckpt: why}
    row = next(line for line in tables_markdown(res) if line.startswith("| tiny-x16"))
    assert row.split("|")[4].strip() == "n/a" and row.split("|")[-2].strip() == "colocated"
    again = result_from_json(payload, suite)
    assert tables_markdown(again) == tables_markdown(res)


def test_the_validation_suite_runs_train_workloads_on_models_no_shipped_training_config_draws():
    standard = read_suite_spec(SUITES_DIR / "standard.yaml")
    validation = load_suite("validation")
    presets = {s.emulator_config.preset for s in validation.scenarios}
    assert {s.split for s in validation.scenarios} == {"train"}   # selection may read it
    train_workloads = [s.workload for s in standard.scenarios if s.split == "train"]
    for s in read_suite_spec(SUITES_DIR / "validation.yaml").scenarios:
        assert s.workload in train_workloads, f"{s.name} must replay a train workload of the standard suite"
    assert not presets & {s.preset for s in standard.scenarios}   # no model of the standard suite
    shipped = json.loads((ROOT / "agents" / "checkpoints" / "default" / "metadata.json").read_text(encoding="utf-8"))
    assert presets and not presets & set(shipped["training_distribution"]["presets"])
    # generalist_multimodel.yaml (session 12) predates the suite and draws the A100 70B: it can never
    # be chosen by a rule that reads this suite; every other training config leaves both presets out
    for p in (ROOT / "configs" / "train").glob("*.yaml"):
        env = (yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("env") or {}
        drawn = {env.get("preset")} | set(((env.get("distribution") or {}).get("presets")) or [])
        if p.name != "generalist_multimodel.yaml":
            assert not presets & drawn, f"{p.name} draws {presets & drawn}"
