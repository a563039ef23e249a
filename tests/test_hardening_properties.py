"""Malformed input anywhere gets one clear message and a non-zero exit (or a ValueError), never a
traceback; and what was accepted before still is (hypothesis).

Every CLI command runs in-process through typer's CliRunner on tiny inputs, so a case that happens to
be valid finishes in well under a second. Commands that would start servers (``serve``, ``launch``)
always get at least one value known to be invalid.
"""

from __future__ import annotations

import glob
import json
import math

import numpy as np
import pytest
import yaml
from fuzz import fuzz
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from arrow_rl.cli import app
from arrow_rl.workload.workload import Workload

runner = CliRunner()
FAST = fuzz(25)   # tests/fuzz.py: derandomised in the default suite, ARROW_RL_FUZZ_EXAMPLES for a deep search
DEAD = "http://127.0.0.1:9"  # nothing listens on the discard port

# Values that broke something once (issue 13) or sit on a boundary, plus arbitrary short text.
NASTY_NUMBERS = ["nan", "inf", "-inf", "-1", "0", "-0", "1e30", "1e309", "9223372036854775808", "1.7",
                 "0x10", "", " ", "abc", "1,5", "１", "1e-320", "-1e30", "2"]
values = st.one_of(st.sampled_from(NASTY_NUMBERS), st.text(max_size=12),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.integers(min_value=-2**70, max_value=2**70).map(str))


def assert_clean(result) -> None:
    """No traceback; a failure says something on one of the streams."""
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), f"uncaught {type(exc).__name__}: {exc}\n{result.output}"
    assert "Traceback" not in result.output
    if result.exit_code != 0:
        assert result.output.strip(), "a failure must say why"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("hard")
    rng = np.random.default_rng(0)
    n = 12
    Workload(np.cumsum(rng.exponential(0.5, n)), rng.integers(10, 400, n), rng.integers(1, 30, n)).to_csv(d / "t.csv")
    (d / "bin.yaml").write_bytes(bytes(range(256)) * 4)
    return d


def invoke(args: list[str]):
    return runner.invoke(app, args, catch_exceptions=True)


# ------------------------------------------------------------------------------------ CLI commands
SIM_OPTS = ["--instances", "--mode", "--prefill-instances", "--max-num-batched-tokens", "--max-num-seqs",
            "--rate-scale", "--slo-ttft", "--slo-tpot", "--router", "--seed", "--flip-delay",
            "--gpu-memory-utilization", "--format", "--preset"]


@FAST
@given(picks=st.lists(st.tuples(st.sampled_from(SIM_OPTS), values), min_size=1, max_size=3))
def test_simulate_never_tracebacks(tiny, picks):
    args = ["simulate", "--preset", "h100-llama3.1-8b-tp1", "--instances", "2", "--workload",
            str(tiny / "t.csv"), "--quiet"]
    for opt, v in picks:
        args += [opt, v]
    assert_clean(invoke(args))


EVAL_OPTS = ["--rel-tol", "--start", "--duration", "--seeds", "--rate-mode", "--growth", "--slo-ttft", "--slo-tpot",
             "--flip-delay", "--controllers", "--instances", "--max-num-seqs"]


@FAST
@given(picks=st.lists(st.tuples(st.sampled_from(EVAL_OPTS), values), min_size=1, max_size=2))
def test_evaluate_never_tracebacks(tiny, picks):
    args = ["evaluate", "--preset", "h100-llama3.1-8b-tp1", "--instances", "2", "--workload", str(tiny / "t.csv"),
            "--slo-ttft", "2", "--slo-tpot", "0.1", "--controllers", "static:1", "--max-evals", "2", "--seeds", "1",
            "--span", "5", "--warmup", "0"]
    for opt, v in picks:
        args += [opt, v]
    assert_clean(invoke(args))


GEN_OPTS = ["--rate", "--duration", "--cv", "--stage", "--rates", "--dwell", "--phase-s", "--input-mean",
            "--input-cv", "--output-mean", "--output-cv", "--kind", "--seed"]


@FAST
@given(kind=st.sampled_from(["poisson", "gamma", "mmpp", "stages", "phase_shift", "zzz"]),
       picks=st.lists(st.tuples(st.sampled_from(GEN_OPTS), values), min_size=1, max_size=3))
def test_workload_generate_never_tracebacks(tiny, kind, picks):
    args = ["workload", "generate", "-o", str(tiny / "g.csv"), "--kind", kind, "--rate", "2", "--duration", "5"]
    for opt, v in picks:
        args += [opt, v]
    assert_clean(invoke(args))


@FAST
@given(body=st.binary(max_size=300), fmt=st.sampled_from([None, "canonical", "azure", "mooncake", "burstgpt"]))
def test_workload_info_never_tracebacks_on_arbitrary_files(tiny, body, fmt):
    path = tiny / "arb.csv"
    path.write_bytes(body)
    assert_clean(invoke(["workload", "info", str(path)] + (["--format", fmt] if fmt else [])))


LIVE_CASES = [
    ["bench", "--router", DEAD, "--workload", "azure-conv", "--limit", "2"],
    ["deploy", "--controller", "arrow", "--router", DEAD, "--token", "t"],
    ["live-profile", "--instance", f"{DEAD}=prefill"],
]


@FAST
@given(case=st.sampled_from(range(len(LIVE_CASES))),
       picks=st.lists(st.tuples(st.sampled_from(["--rate-scale", "--limit", "--duration", "--slo-ttft", "--interval",
                                                 "--steps", "--act-timeout", "--lengths", "--batches", "--repeats",
                                                 "--vocab-size", "--max-model-len"]), values), max_size=2))
def test_live_commands_against_nothing_fail_cleanly(case, picks):
    args = list(LIVE_CASES[case])
    for opt, v in picks:
        args += [opt, v]
    r = invoke(args)
    assert_clean(r)
    assert r.exit_code != 0  # there is no router or instance: it must not report success


@FAST
@given(opt=st.sampled_from(["--port", "--routing", "--slo-ttft", "--host-config", "--cluster"]), v=values)
def test_serve_refuses_bad_values_before_binding(tiny, opt, v):
    args = ["serve", "--instance", f"{DEAD}=prefill"]
    if opt == "--host-config":
        args += ["--config", str(tiny / "bin.yaml")]
    elif opt == "--cluster":
        args += ["--cluster", str(tiny / "bin.yaml")]
    elif opt == "--port":
        args += ["--port", v, "--routing", "zzz"]  # routing zzz keeps it from ever binding
    else:
        args += [opt, v, "--routing", "zzz"] if opt != "--routing" else [opt, v + "!"]
    r = invoke(args)
    assert_clean(r)
    assert r.exit_code != 0


@FAST
@given(opt=st.sampled_from(["--instances", "--engine", "--base-port"]), v=values)
def test_launch_refuses_bad_values_before_starting_anything(tiny, opt, v):
    args = ["launch", "--workdir", str(tiny / "lc"), "--cluster-file", str(tiny / "c.json"),
            "--engine", "not-an-engine", opt, v]
    r = invoke(args)
    assert_clean(r)
    assert r.exit_code != 0


# ----------------------------------------------------------------------------- config schemas
SMOKE = yaml.safe_load(open("configs/train/smoke.yaml", encoding="utf-8"))
junk = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=8),
                 st.lists(st.integers(-5, 5), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
TRAIN_KEYS = ["policy", "device", "n_steps", "batch_size", "gamma", "learning_rate", "n_envs", "n_timesteps",
              "normalize", "vec_env", "seed", "n_epochs", "gae_lambda", "ent_coef", "clip_range", "bogus_key",
              ("policy_kwargs", "net_arch"), ("policy_kwargs", "activation_fn"), ("policy_kwargs", "bogus"),
              ("env", "num_instances"), ("env", "slo_ttft_s"), ("pretrain", "epochs"), ("eval", "rate_scales")]


@FAST
@given(key=st.sampled_from(TRAIN_KEYS), value=junk)
def test_train_config_schema_errors_are_config_errors(key, value):
    from agents.config import ConfigError, config_from_dict

    raw = yaml.safe_load(yaml.safe_dump(SMOKE))
    if isinstance(key, tuple):
        raw.setdefault(key[0], {})[key[1]] = value
    else:
        raw[key] = value
    try:
        cfg = config_from_dict(raw, source="fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml")
        return
    # accepted: every hyperparameter is in range, so SB3 can build the model from it
    assert cfg.policy in ("MlpPolicy", "MultiInputPolicy")


@FAST
@given(key=st.sampled_from(["preset", "num_instances", "mode", "num_prefill", "max_num_batched_tokens",
                            "max_num_seqs", "slo_ttft_s", "slo_tpot_s", "flip_delay_s", "gpu_memory_utilization",
                            "bogus"]), value=junk)
def test_emulator_config_errors_are_value_errors(tmp_path, key, value):
    from arrow_rl.cluster.emulator import EmulatorConfig

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"preset": "h100-llama3.1-8b-tp1", "num_instances": 4, key: value}))
    try:
        EmulatorConfig.from_yaml(path)
    except ValueError as exc:
        assert str(path) in str(exc)


@FAST
@given(key=st.sampled_from(["duration_s", "rate_scale", "start_s", "traces", "drain_s", "num_instances"]), value=junk)
def test_env_config_errors_are_value_errors(key, value):
    from envs.config import EnvConfig

    try:
        EnvConfig.from_dict({"episode": {key: value}}, source="fuzz")
    except ValueError as exc:
        assert "fuzz" in str(exc)


# Every command that reads a config or result file, given junk in it: bytes, or YAML of any shape.
FILE_COMMANDS = {
    "suite-run": lambda p, d: ["suite", "run", "--suite", p, "--controllers", "arrow", "--json", str(d / "s.json")],
    "suite-report": lambda p, d: ["suite", "report", p],
    "tune": lambda p, d: ["tune", "-c", p, "--out", str(d / "best.yaml")],
    "simulate": lambda p, d: ["simulate", "--config", p, "--workload", str(d / "t.csv"), "--quiet"],
    "train": lambda p, d: ["train", "-c", p, "--n-timesteps", "0", "--no-progress", "--log-dir", str(d / "runs")],
    "serve": lambda p, d: ["serve", "--config", p, "--routing", "zzz"],
    "launch": lambda p, d: ["launch", "--config", p, "--engine", "not-an-engine", "--workdir", str(d / "lc")],
}
file_bodies = st.one_of(st.binary(max_size=200),
                        st.dictionaries(st.text(max_size=6), junk, max_size=4).map(lambda v: yaml.safe_dump(v).encode()),
                        junk.map(lambda v: yaml.safe_dump(v).encode()))


@FAST
@given(cmd=st.sampled_from(sorted(FILE_COMMANDS)), body=file_bodies)
def test_every_file_a_command_reads_fails_cleanly_on_junk(tiny, cmd, body):
    path = tiny / "junk.yaml"
    path.write_bytes(body)
    r = invoke(FILE_COMMANDS[cmd](str(path), tiny))
    assert_clean(r)
    assert r.exit_code != 0


# ---------------------------------------------------------------------------------- env methods
@pytest.fixture(scope="module")
def env():
    from envs.pd_cluster_env import PDClusterEnv

    e = PDClusterEnv(episode={"duration_s": 5, "random_start": False})
    yield e
    e.close()


actions = st.one_of(st.floats(allow_nan=True), st.text(max_size=3), st.booleans(), st.none(),
                    st.integers(-2**70, 2**70), st.lists(st.integers(0, 3), max_size=3))


@FAST
@given(action=actions)
def test_env_step_refuses_anything_but_a_valid_integer(env, action):
    env.reset(seed=0)
    n = int(env.action_space.n)
    one = action[0] if isinstance(action, list) and len(action) == 1 else action  # as a VecEnv passes it
    valid = isinstance(one, int) and not isinstance(one, bool) and 0 <= one < n
    if valid:
        env.step(action)
    else:
        with pytest.raises(ValueError, match="step\\(action\\)"):
            env.step(action)


def test_env_step_still_takes_numpy_integers_and_one_element_arrays(env):
    for a in (np.int64(0), np.array(0), np.array([0]), np.int32(1), 0):
        env.reset(seed=0)   # a fresh episode each time: a short one may end after a step
        env.step(a)


@FAST
@given(key=st.sampled_from(["start_s", "rate_scale", "num_instances", "cluster_seed", "trace", "duration_s", "zzz"]),
       value=st.one_of(st.floats(allow_nan=True), st.text(max_size=4), st.booleans(), st.none(),
                       st.integers(-2**40, 2**40)))
def test_env_reset_options_are_checked(env, key, value):
    try:
        env.reset(seed=0, options={key: value})
    except (ValueError, OSError) as exc:  # OSError: a trace path that is no file (names it)
        assert str(exc)
        return
    # accepted: a real episode with requests in it
    assert len(env.workload) > 0 or key == "duration_s"
    if key in ("start_s", "rate_scale"):
        assert isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


# -------------------------------------------------------------------------- nothing accepted is lost
@pytest.mark.parametrize("path", sorted(glob.glob("configs/train/*.yaml")))
def test_every_shipped_training_config_still_validates(path):
    from agents.config import load_config

    load_config(path)


@pytest.mark.parametrize("path", sorted(glob.glob("configs/clusters/*.yaml")))
def test_every_shipped_cluster_config_still_validates(path):
    from arrow_rl.cluster.emulator import EmulatorConfig

    EmulatorConfig.from_yaml(path)


@pytest.mark.parametrize("path", sorted(glob.glob("configs/workloads/*.yaml")))
def test_every_shipped_workload_spec_still_validates(path):
    from arrow_rl.workload.generators import load_spec

    load_spec(path)


@pytest.mark.parametrize("path", sorted(glob.glob("configs/env/*.yaml")))
def test_every_shipped_env_config_still_validates(path):
    from envs.config import EnvConfig

    EnvConfig.from_yaml(path)


# ------------------------------------------------------------------------------ router endpoints
# Malformed bodies, fields and queries at every endpoint of the live router (fake vLLM instances):
# an answer below 500 every time, the instances' bookkeeping restored after each request, and a
# valid request still served afterwards (nothing accepted before is lost).
CLIENT_FIELDS = ["model", "prompt", "messages", "max_tokens", "max_completion_tokens", "min_tokens", "n",
                 "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                 "repetition_penalty", "seed", "stop", "stream", "stream_options", "ignore_eos", "logprobs",
                 "echo", "top_logprobs", "return_token_ids", "kv_transfer_params", "zzz"]
ADMIN_FIELDS = ["id", "role", "flips", "source", "policy", "decode_load", "prefill_load", "zzz"]
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.integers(-3, 4),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                         st.sampled_from(["tiny", "prefill", "decode", "arrow", "least-loaded", "user"]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(["role", "content", "type", "text", "id", "x"]), inner,
                                             max_size=3), max_leaves=6)


def _body(fields: list[str]):
    """A body as raw bytes: a valid request with fields replaced by junk, a junk object, any JSON
    value, or any bytes. ``json.dumps`` writes NaN/Infinity literals and integers beyond 64 bits."""
    valid = st.just({"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 2})
    patched = st.tuples(valid, st.dictionaries(st.sampled_from(fields), json_values, min_size=1, max_size=3)) \
        .map(lambda t: {**t[0], **t[1]})
    return st.one_of(patched, st.dictionaries(st.sampled_from(fields), json_values, max_size=4), json_values) \
        .map(lambda v: json.dumps(v).encode()) | st.binary(max_size=64)


@pytest.fixture(scope="module")
def router_rig():
    from arrow_rl.cluster.live.fake_vllm import FakeConfig
    from live_fixtures import live_rig

    quick = FakeConfig(decode_step_s=0.0, prefill_base_s=0.0, kv_pull_s=0.0)  # junk that is valid stays fast
    with live_rig(roles=["prefill", "decode", "decode"], configs=[quick] * 3, routing="arrow") as rig:
        with rig.client() as c:
            yield rig, c


def _assert_router_intact(rig, c) -> None:
    import time as _time

    deadline = _time.time() + 5  # a relay's bookkeeping is restored as its stream task ends
    while any(s.num_prefill or s.num_decode for s in rig.router.state.instances) and _time.time() < deadline:
        _time.sleep(0.01)
    assert all(s.num_prefill == 0 and s.num_decode == 0 for s in rig.router.state.instances)
    r = c.post("/v1/completions", json={"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 2, "ignore_eos": True})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2, r.text


@FAST
@given(path=st.sampled_from(["/v1/completions", "/v1/chat/completions"]), body=_body(CLIENT_FIELDS))
def test_router_client_endpoints_answer_junk_below_500(router_rig, path, body):
    rig, c = router_rig
    r = c.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code < 500, (body[:200], r.status_code, r.text[:300])
    if r.status_code >= 400:
        err = r.json()["error"]
        assert err["message"] and err["code"] == r.status_code
    _assert_router_intact(rig, c)


@FAST
@given(path=st.sampled_from(["/roles", "/routing", "/signals"]), body=_body(ADMIN_FIELDS),
       after=st.one_of(st.text(max_size=12), st.integers(-2**70, 2**70).map(str)))
def test_router_admin_endpoints_answer_junk_below_500(router_rig, path, body, after):
    from live_fixtures import AUTH

    rig, c = router_rig
    r = c.post(path, content=body, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code < 500, (path, body[:200], r.status_code, r.text[:300])
    assert r.status_code in (200, 400, 404, 409, 413, 422), (path, r.status_code, r.text[:300])
    roles = [s.role for s in rig.router.state.instances]
    assert len(set(roles)) == 2  # a flip never empties a pool
    r = c.get("/events", params={"after": after}, headers=AUTH)
    assert r.status_code in (200, 400), r.text[:300]
    assert c.get("/state", headers=AUTH).status_code == 200
    _assert_router_intact(rig, c)
