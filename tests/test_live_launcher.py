"""Launcher and config files (no vLLM needed): commands, environment, tiny model, clean stop."""

from __future__ import annotations

import contextlib

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arrow_rl.cluster.base import Role
from arrow_rl.cluster.live.config import load_config_file
from arrow_rl.cluster.live.launcher import LaunchConfig, Launcher, stop_group, write_tiny_model
from arrow_rl.serving.config import RouterConfig

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_configs_validate():
    cpu = load_config_file(ROOT / "configs/live/cpu.yaml", LaunchConfig)
    assert cpu.engine == "vllm-cpu" and cpu.roles() == [Role.PREFILL, Role.DECODE]
    gpu = load_config_file(ROOT / "configs/live/gpu.yaml", LaunchConfig)
    assert gpu.num_instances == 8 and gpu.roles().count(Role.PREFILL) == 4
    router = load_config_file(ROOT / "configs/live/router.yaml", RouterConfig)
    assert router.host == "127.0.0.1" and router.routing == "arrow"


def test_bad_config_names_file_and_field(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("engine: vllm-cpu\nnum_instances: 1\n")
    with pytest.raises(ValueError, match=r"bad.yaml: num_instances"):
        load_config_file(p, LaunchConfig)
    p.write_text("instances: [{url: 'localhost:8000', role: prefill}]\n")
    with pytest.raises(ValueError, match=r"instances.0.url.*http://"):
        load_config_file(p, RouterConfig)


def test_tiny_model_has_head_dim_supported_by_vllm_cpu(tmp_path):
    cfg = json.loads((write_tiny_model(tmp_path) / "config.json").read_text())
    assert cfg["hidden_size"] // cfg["num_attention_heads"] >= 32
    with pytest.raises(ValueError, match="head_dim"):
        write_tiny_model(tmp_path / "x", hidden_size=64)


def test_cpu_command_uses_kv_both_nixl_dummy_weights_and_eager(tmp_path):
    launcher = Launcher(LaunchConfig(python="/py"), tmp_path)
    cmd = launcher.command(1, "/m")
    assert cmd[:3] == ["/py", "-m", "vllm.entrypoints.openai.api_server"]
    kv = json.loads(cmd[cmd.index("--kv-transfer-config") + 1])
    assert kv["kv_connector"] == "NixlConnector" and kv["kv_role"] == "kv_both" and kv["kv_buffer_device"] == "cpu"
    assert {"--load-format", "dummy", "--enforce-eager"} <= set(cmd)
    assert "--skip-tokenizer-init" not in cmd  # the tiny model has a real tokenizer (text and chat)
    assert cmd[cmd.index("--port") + 1] == "8101"
    env = launcher.environment(1)
    assert env["VLLM_NIXL_SIDE_CHANNEL_PORT"] == "5601" and env["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_model_paths_are_absolute_because_instances_run_in_workdir(tmp_path, monkeypatch):
    # Regression: `arrow-rl launch` with the default relative --workdir passed "live-cluster/tiny-llama"
    # to instances running inside live-cluster/, and vLLM went looking for it on the model hub.
    monkeypatch.chdir(tmp_path)
    tiny = Launcher(LaunchConfig(), "live-cluster")._model()
    assert Path(tiny).is_absolute() and (Path(tiny) / "config.json").exists()
    (tmp_path / "models" / "mine").mkdir(parents=True)
    local = Launcher(LaunchConfig(model="models/mine"), "live-cluster")._model()
    assert local == str(tmp_path / "models" / "mine")
    assert Launcher(LaunchConfig(engine="vllm", model="org/model"), "live-cluster")._model() == "org/model"


def test_gpu_command_uses_cuda_buffers_and_real_weights(tmp_path):
    launcher = Launcher(LaunchConfig(engine="vllm", model="org/model", gpu_ids=["0", "1"]), tmp_path)
    cmd = launcher.command(0, "org/model")
    assert json.loads(cmd[cmd.index("--kv-transfer-config") + 1])["kv_buffer_device"] == "cuda"
    assert "--load-format" not in cmd and "--enforce-eager" not in cmd
    assert launcher.environment(1)["CUDA_VISIBLE_DEVICES"] == "1"


def test_instances_have_distinct_http_and_nixl_ports(tmp_path):
    launcher = Launcher(LaunchConfig(num_instances=3), tmp_path)
    ports = {launcher.command(i, "/m")[launcher.command(i, "/m").index("--port") + 1] for i in range(3)}
    nixl = {launcher.environment(i)["VLLM_NIXL_SIDE_CHANNEL_PORT"] for i in range(3)}
    assert len(ports) == 3 and len(nixl) == 3


def test_stop_group_ends_the_child_processes_too():
    # A parent that forks a child (like vLLM's API server → EngineCore) in its own session.
    script = "import subprocess,sys,time; c=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)']); print(c.pid, flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(proc.stdout.readline())
    stop_group(proc, grace_s=5)
    assert proc.poll() is not None
    time.sleep(0.2)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_wait_healthy_reports_an_instance_that_exits(tmp_path):
    from arrow_rl.cluster.live.launcher import LaunchError

    cfg = LaunchConfig(python=sys.executable, entrypoint="this_module_does_not_exist", base_port=18990)
    launcher = Launcher(cfg, tmp_path)
    launcher.start()
    try:
        with pytest.raises(LaunchError, match="exited with code"):
            launcher.wait_healthy(timeout_s=30)
    finally:
        launcher.stop()


def test_tiny_model_gets_a_real_tokenizer_with_a_chat_template_covering_its_whole_vocab(tmp_path):
    from tokenizers import Tokenizer

    d = write_tiny_model(tmp_path)
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    vocab = json.loads((d / "config.json").read_text())["vocab_size"]
    assert tok.get_vocab_size() == vocab  # every id the dummy model can sample detokenizes
    ids = tok.encode("Hello there, how are you today?").ids
    assert 1 < len(ids) < 20 and tok.decode(ids) == "Hello there, how are you today?"
    assert all(isinstance(tok.decode([i]), str) for i in range(vocab))
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    assert cfg["eos_token"] == "</s>" and "add_generation_prompt" in cfg["chat_template"]
    # Deterministic: a second build is byte-identical.
    assert (write_tiny_model(tmp_path / "again") / "tokenizer.json").read_bytes() == (d / "tokenizer.json").read_bytes()


def test_tiny_tokenizer_renders_chat_like_vllm_would(tmp_path):
    transformers = pytest.importorskip("transformers")  # vLLM's tokenizer loader (the live extra)
    tok = transformers.AutoTokenizer.from_pretrained(str(write_tiny_model(tmp_path)))
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert text == "<|user|>\nHi</s>\n<|assistant|>\n" and tok.eos_token_id == 2


# A stand-in for vLLM's API server: answers /health and lists its --served-model-name values.
_STANDIN = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
args = sys.argv[1:]
port = int(args[args.index('--port') + 1])
names = []
i = args.index('--served-model-name') + 1
while i < len(args) and not args[i].startswith('--'):
    names.append(args[i]); i += 1
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({'data': [{'id': n} for n in names]}).encode() if self.path == '/v1/models' else b'ok'
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
HTTPServer(('127.0.0.1', port), H).serve_forever()
"""


def _standin_launcher(tmp_path, base_port):
    (tmp_path / "standin_vllm.py").write_text(_STANDIN)
    cfg = LaunchConfig(python=sys.executable, entrypoint="standin_vllm", base_port=base_port,
                       nixl_base_port=base_port + 500, model=str(tmp_path), env={"PYTHONPATH": str(tmp_path)})
    return Launcher(cfg, tmp_path)


def test_wait_healthy_accepts_the_instances_it_started(tmp_path):
    launcher = _standin_launcher(tmp_path, 19400)
    launcher.start()
    try:
        assert launcher.wait_healthy(timeout_s=30) < 30
        assert launcher.identity_name(0) != launcher.identity_name(1)
        cmd = launcher.command(0, "/m")
        names = cmd[cmd.index("--served-model-name") + 1: cmd.index("--served-model-name") + 3]
        assert names == ["tiny", launcher.identity_name(0)]  # clients keep using the first name
    finally:
        launcher.stop()


def test_start_refuses_a_port_that_is_taken(tmp_path):
    import socket

    from arrow_rl.cluster.live.launcher import PortInUse

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        launcher = Launcher(LaunchConfig(base_port=port - 1, nixl_base_port=19950), tmp_path)
        with pytest.raises(PortInUse, match=str(port)):
            launcher.start()
        assert launcher.instances == []


def test_wait_healthy_rejects_another_server_that_took_the_port(tmp_path):
    from arrow_rl.cluster.live.launcher import LaunchError

    # Another vLLM-like server (its own nonce) takes instance 0's port after our port check.
    other = _standin_launcher(tmp_path, 19600)
    ours = _standin_launcher(tmp_path, 19600)
    other.start()
    try:
        other.wait_healthy(timeout_s=30)
        ours.instances = other.instances  # what our launcher would poll: the same ports
        with pytest.raises(LaunchError, match="not instance 0"):
            ours.wait_healthy(timeout_s=30)
    finally:
        other.stop()


def test_kv_connector_extra_config_reaches_the_instances_kv_transfer_config(tmp_path):
    plain = Launcher(LaunchConfig(), tmp_path).kv_transfer_config()
    assert "kv_connector_extra_config" not in plain
    extra = Launcher(LaunchConfig(kv_connector_extra_config={"num_threads": 2}), tmp_path)
    cmd = extra.command(0, "/m")
    sent = json.loads(cmd[cmd.index("--kv-transfer-config") + 1])
    assert sent["kv_connector_extra_config"] == {"num_threads": 2} and sent["kv_role"] == "kv_both"


def _launched_pids(cluster_file) -> list[int]:
    try:
        return [int(p) for p in json.loads(cluster_file.read_text())["launch"]["pids"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def test_launch_shows_progress_while_instances_start_and_writes_the_cluster_file(tmp_path):
    """``arrow-rl launch`` into a pipe (not a terminal): a line as it starts, one per instance as it
    becomes healthy, then the cluster file; Ctrl-C stops the instances."""
    import os
    import signal

    (tmp_path / "standin_vllm.py").write_text(_STANDIN)
    cfg = tmp_path / "launch.yaml"
    cfg.write_text(json.dumps({"python": sys.executable, "entrypoint": "standin_vllm", "base_port": 19800,
                               "nixl_base_port": 20300, "model": str(tmp_path), "env": {"PYTHONPATH": str(tmp_path)}}))
    cluster = tmp_path / "cluster.json"
    proc = subprocess.Popen([sys.executable, "-m", "arrow_rl.cli", "launch", "--config", str(cfg), "--workdir",
                             str(tmp_path / "w"), "--cluster-file", str(cluster)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "80"},
                            # a shell without job control (CI, `cmd &` in a script) starts background jobs with
                            # SIGINT ignored, which the child would inherit: give it a terminal user's Ctrl-C
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith("next: arrow-rl serve"):
                break
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            for pid in _launched_pids(cluster):   # killed before its own cleanup: stop the stand-ins too
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
    out = "\n".join(lines) + "\n" + rest
    assert lines and lines[0].startswith("starting 2 × vllm-cpu instances (ports 19800..19801"), out
    assert any(ln.startswith("instance 0 healthy after") for ln in lines), out
    assert any(ln.startswith("instance 1 healthy after") for ln in lines), out
    assert "all 2 instances healthy" in out and "stopping instances" in out and "Traceback" not in out
    assert [i["url"] for i in json.loads(cluster.read_text())["instances"]] == ["http://127.0.0.1:19800",
                                                                              "http://127.0.0.1:19801"]


def test_supervise_restarts_a_dead_instance_with_back_off_and_gives_up_after_the_cap(tmp_path):
    """One instance dies: it is restarted (same port, same identity), the other is never touched;
    after max_restarts restarts in a row the launcher stops restarting it but keeps running."""
    import os
    import signal

    launcher = _standin_launcher(tmp_path, 19700)
    launcher.config = launcher.config.model_copy(update={"max_restarts": 2, "restart_backoff_s": 0.1})
    launcher.start()
    try:
        launcher.wait_healthy(timeout_s=30)
        other_pid = launcher.instances[1].process.pid
        events: list[str] = []

        def supervise_until(needle: str, timeout_s: float = 30) -> None:
            deadline = time.time() + timeout_s
            while time.time() < deadline:
                events.extend(launcher.supervise())
                if any(needle in e for e in events):
                    return
                time.sleep(0.05)
            raise AssertionError(f"no {needle!r} in {events}")

        waits = []
        for k in range(2):
            os.killpg(launcher.instances[0].process.pid, signal.SIGKILL)
            supervise_until(f"restart {k + 1} of at most 2")
            waits.append(float(events[-1].split("restarting it in ")[1].split(" s")[0]))
            supervise_until("instance 0 is back")
            events.clear()
        assert waits == [0.1, 0.2]   # the back-off doubles
        os.killpg(launcher.instances[0].process.pid, signal.SIGKILL)
        supervise_until("not restarting it (max_restarts=2 reached)")
        assert launcher.instances[0].gave_up and launcher.instances[0].restarts_total == 2
        assert launcher.instances[1].process.pid == other_pid and launcher.instances[1].process.poll() is None
        assert launcher.cluster_file()["launch"]["restarts"] == [2, 0]
    finally:
        launcher.stop()


def test_fake_engine_command_starts_the_stand_in_with_the_identity_name(tmp_path):
    launcher = Launcher(LaunchConfig(engine="fake", num_instances=3, extra_args=["--decode-step-s", "0.02"]), tmp_path)
    cmd = launcher.command(2, launcher._model())
    assert cmd[1:3] == ["-m", "arrow_rl.cluster.live.fake_vllm"] and cmd[-2:] == ["--decode-step-s", "0.02"]
    names = cmd[cmd.index("--served-model-name") + 1: cmd.index("--served-model-name") + 3]
    assert names == ["tiny", launcher.identity_name(2)] and cmd[cmd.index("--port") + 1] == "8102"
    assert not (tmp_path / "tiny-llama").exists()   # no model files for the stand-in
