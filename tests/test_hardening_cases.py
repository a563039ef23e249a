"""Every bad input issue 13 §2 names, refused with one clear message naming the field.

The property tests (``test_hardening_properties.py``) show that malformed values never cause a
traceback; these pin each named case to its refusal, so that quietly accepting one again (as
``gamma: 2`` once trained without complaint) fails a test with the case's name.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from arrow_rl.cli import app
from arrow_rl.workload.workload import Workload
from live_fixtures import TOKEN, live_rig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = ROOT / "agents/checkpoints/default"
runner = CliRunner()


def refused(args: list[str], *needles: str) -> str:
    """Run the CLI in-process; it must exit 2 with one clear message containing every needle."""
    r = runner.invoke(app, args, catch_exceptions=True)
    assert r.exception is None or isinstance(r.exception, SystemExit), f"{type(r.exception).__name__}: {r.exception}"
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for needle in needles:
        assert needle in r.output, f"{needle!r} not in {r.output!r}"
    return r.output


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("cases") / "t.csv"
    n = 12
    Workload(np.cumsum(rng.exponential(0.5, n)), rng.integers(10, 400, n), rng.integers(1, 30, n)).to_csv(path)
    return path


# ----------------------------------------------------------------------------- train configs
SMOKE = yaml.safe_load((ROOT / "configs/train/smoke.yaml").read_text(encoding="utf-8"))


def _episode(**kw) -> dict:
    return {**SMOKE["env"], "episode": {**SMOKE["env"]["episode"], **kw}}


@pytest.mark.parametrize("key,value,needles", [
    ("policy_kwargs", {"net_arch": "big"}, ["net_arch", "'big'"]),
    ("policy_kwargs", {"net_arch": [16, 16], "bogus": 1}, ["policy_kwargs", "bogus"]),
    ("n_steps", 0, ["n_steps", "got 0"]),
    ("batch_size", 0, ["batch_size", "got 0"]),
    ("policy", "CnnPolicy", ["policy", "CnnPolicy"]),
    ("device", "gpu9", ["device", "gpu9"]),
    ("gamma", 2, ["gamma", "got 2"]),
    ("env", _episode(traces=["nonexistent"]), ["env.episode.traces[0]", "nonexistent"]),
    ("env", {**SMOKE["env"], "action": {"kind": "moves"}, "observation": {"kind": "pools"},
             "teacher": "oracle-split", "teacher_config": {"horizon": 3}}, ["teacher_config", "horizon"]),
], ids=["net_arch-big", "policy_kwargs-unknown-key", "n_steps-0", "batch_size-0", "CnnPolicy", "device-gpu9",
        "gamma-2", "traces-nonexistent", "teacher_config-unknown-key"])
def test_train_refuses_each_bad_config_value_before_building_a_model(tmp_path, key, value, needles):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({**SMOKE, key: value}), encoding="utf-8")
    out = refused(["train", "--config", str(cfg), "--log-dir", str(tmp_path / "runs"), "--no-progress"], *needles)
    assert "imitation round" not in out and not (tmp_path / "runs").exists()  # nothing was trained


def test_train_refuses_a_binary_yaml_naming_the_file(tmp_path):
    cfg = tmp_path / "bin.yaml"
    cfg.write_bytes(bytes(range(256)) * 4)
    refused(["train", "--config", str(cfg), "--no-progress"], str(cfg), "not a text file")


# ----------------------------------------------------------------------------- checkpoints
@pytest.fixture()
def checkpoint_copy(tmp_path):
    if not DEFAULT_CKPT.is_dir():
        pytest.skip("no shipped checkpoint")

    def make(**meta_patch) -> Path:
        d = tmp_path / "ckpt"
        shutil.copytree(DEFAULT_CKPT, d)
        meta = json.loads((d / "metadata.json").read_text())
        meta.update(meta_patch)
        (d / "metadata.json").write_text(json.dumps(meta))
        return d
    return make


def _corrupt_vecnormalize(d: Path) -> Path:
    (d / "vecnormalize.pkl").write_bytes(b"\x80\x04 not a pickle \x00\xff")
    return d


EVALUATE = ["evaluate", "--preset", "h100-llama3.1-8b-tp1", "--instances", "8", "--slo-ttft", "2",
            "--slo-tpot", "0.1", "--max-evals", "2", "--seeds", "1", "--span", "5", "--warmup", "0"]


def test_evaluate_refuses_a_corrupted_vecnormalize_naming_the_file(checkpoint_copy, trace):
    d = _corrupt_vecnormalize(checkpoint_copy(normalized=True))
    refused(EVALUATE + ["--workload", str(trace), "--controllers", str(d)], "vecnormalize.pkl",
            "cannot load the VecNormalize statistics")


def test_evaluate_refuses_a_checkpoint_whose_observation_space_is_not_a_box(checkpoint_copy, trace):
    d = checkpoint_copy(observation_space="weird")
    refused(EVALUATE + ["--workload", str(trace), "--controllers", str(d)], "metadata.json", "'observation_space'",
            '"weird"')


@pytest.mark.parametrize("damage", ["vecnormalize", "observation_space"])
def test_deploy_refuses_a_damaged_checkpoint_before_its_first_step(checkpoint_copy, damage):
    if damage == "vecnormalize":
        d, needle = _corrupt_vecnormalize(checkpoint_copy(normalized=True)), "vecnormalize.pkl"
    else:
        d, needle = checkpoint_copy(observation_space="weird"), "'observation_space'"
    with live_rig() as rig:
        out = refused(["deploy", "--controller", str(d), "--router", rig.url, "--token", TOKEN, "--steps", "1"],
                      needle)
        assert "deploying" not in out
        assert [s.role.value for s in rig.router.state.instances] == ["prefill", "decode"]


# ----------------------------------------------------------------------------- simulate / evaluate
def test_simulate_refuses_a_memory_utilization_that_leaves_no_kv_cache(trace, tmp_path):
    refused(["simulate", "--preset", "h100-llama3.1-8b-tp1", "--instances", "2", "--workload", str(trace),
             "--gpu-memory-utilization", "0.01", "--quiet"], "gpu_memory_utilization=0.01", "no memory for the KV cache")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("preset: h100-llama3.1-8b-tp1\nnum_instances: 2\ngpu_memory_utilization: 0.01\n")
    refused(["simulate", "--config", str(cfg), "--workload", str(trace), "--quiet"], str(cfg),
            "gpu_memory_utilization=0.01")


def test_simulate_refuses_prefill_instances_with_colocated_mode(trace):
    refused(["simulate", "--preset", "h100-llama3.1-8b-tp1", "--instances", "2", "--mode", "colocated",
             "--prefill-instances", "1", "--workload", str(trace), "--quiet"], "--prefill-instances", "colocated")


@pytest.mark.parametrize("span", ["inf", "nan", "-1", "0"])
def test_evaluate_refuses_a_span_that_is_not_finite_and_positive(trace, span):
    refused(EVALUATE + ["--workload", str(trace), "--controllers", "static:4", "--span", span], "--span")


# ----------------------------------------------------------------------------- workloads
@pytest.mark.parametrize("extra,needles", [
    (["--rate", "1e12", "--duration", "1e6"], ["about 1e+18 requests", "the limit is 50,000,000"]),
    (["--rate", "2", "--duration", "5", "--input-mean", "1e30"], ["mix.input", "1e+30"]),
], ids=["rate-1e12", "input-mean-1e30"])
def test_workload_generate_refuses_out_of_range_specs_instead_of_running_out_of_memory(tmp_path, extra, needles):
    out = tmp_path / "g.csv"
    refused(["workload", "generate", "--kind", "poisson", "-o", str(out)] + extra, *needles)
    assert not out.exists()


BIG = 2**63  # one past int64


@pytest.mark.parametrize("fmt,name,text,field", [
    ("canonical", "c.csv", f"arrival_s,input_tokens,output_tokens\n0.0,{BIG},5\n1.0,10,5\n", "input_tokens"),
    ("azure", "a.csv", f"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,{BIG},5\n"
                       "2023-11-16 18:15:47.6805900,10,5\n", "ContextTokens"),
    ("mooncake", "m.jsonl", json.dumps({"timestamp": 0, "input_length": BIG, "output_length": 5}) + "\n"
                            + json.dumps({"timestamp": 1000, "input_length": 10, "output_length": 5}) + "\n",
     "input_length"),
    ("burstgpt", "b.csv", f"Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                          f"0.0,ChatGPT,10,{BIG},{BIG + 10},Conversation log\n1.0,ChatGPT,10,5,15,Conversation log\n",
     "Response tokens"),
])
def test_each_loader_refuses_a_token_count_beyond_int64_naming_file_line_and_field(tmp_path, fmt, name, text, field):
    path = tmp_path / name
    path.write_text(text)
    line = "line 1" if fmt == "mooncake" else "line 2"
    for cmd in (["workload", "info", str(path), "--format", fmt],
                ["simulate", "--preset", "h100-llama3.1-8b-tp1", "--instances", "2", "--workload", str(path),
                 "--format", fmt, "--quiet"]):
        refused(cmd, str(path), line, f"'{field}'", "token count exceeds")


# ----------------------------------------------------------------------------- live commands
def test_bench_against_a_dead_router_exits_non_zero(trace):
    refused(["bench", "--router", "http://127.0.0.1:9", "--workload", str(trace), "--limit", "2"],
            "cannot reach the router at http://127.0.0.1:9")


# ----------------------------------------------------------------------------- the env
@pytest.fixture(scope="module")
def env():
    from envs.pd_cluster_env import PDClusterEnv

    e = PDClusterEnv(episode={"duration_s": 5, "random_start": False})
    yield e
    e.close()


@pytest.mark.parametrize("action", [1.7, "3", True, -1, 10**6], ids=repr)
def test_env_step_refuses_what_is_not_an_action(env, action):
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"step\(action\)"):
        env.step(action)


@pytest.mark.parametrize("start_s,needle", [(1e9, "has no requests"), (-100, ">= 0"), (math.nan, "finite"),
                                            (math.inf, "finite")])
def test_env_reset_refuses_a_start_that_gives_no_episode(env, start_s, needle):
    with pytest.raises(ValueError, match="start_s") as err:
        env.reset(seed=0, options={"start_s": start_s})
    assert needle in str(err.value)


@pytest.mark.parametrize("scale", [math.inf, math.nan, 0, -1])
def test_env_refuses_a_rate_scale_that_is_not_finite_and_positive(env, scale):
    from envs.pd_cluster_env import PDClusterEnv

    with pytest.raises(ValueError, match="rate_scale"):
        env.reset(seed=0, options={"rate_scale": scale})
    with pytest.raises(ValueError, match="rate_scale"):
        PDClusterEnv(episode={"duration_s": 5, "rate_scale": [1.0, scale]})
