"""``arrow-rl launch --engine fake`` end to end, no vLLM: three stand-in instances, ``arrow-rl serve``
and ``arrow-rl deploy`` of the shipped checkpoint, each in its own process, under client load. The
checkpoint's flips are applied while requests stream, and a killed instance comes back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from arrow_rl.cluster.live.fake_vllm import expected_tokens
from arrow_rl.serving.faultbench import free_port_range, load, prompt, wait_until

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "launch-token"
CLI = [sys.executable, "-c", "from arrow_rl.cli import main; main()"]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "COLUMNS": "200"}
    with open(log, "w") as fh:
        return subprocess.Popen([*CLI, *args], stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=log.parent)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_launch_fake_serve_and_deploy_a_checkpoint_flip_roles_under_load_and_survive_a_kill(tmp_path):
    base = free_port_range(4)
    router_port = base + 3
    cfg = tmp_path / "launch.yaml"
    cfg.write_text(json.dumps({"engine": "fake", "num_instances": 3, "base_port": base, "nixl_base_port": base + 5000,
                               "restart_backoff_s": 0.2,
                               "extra_args": ["--decode-step-s", "0.02", "--prefill-s-per-token", "0.0005"]}))
    cluster = tmp_path / "cluster.json"
    launch = _start(["launch", "--config", str(cfg), "--cluster-file", str(cluster), "--workdir", str(tmp_path / "w")],
                    tmp_path / "launch.log")
    procs = [launch]
    try:
        assert wait_until(lambda: "instance list in" in (tmp_path / "launch.log").read_text() or launch.poll() is not None,
                          60), (tmp_path / "launch.log").read_text()
        assert launch.poll() is None, (tmp_path / "launch.log").read_text()
        url = f"http://127.0.0.1:{router_port}"
        serve = _start(["serve", "--cluster", str(cluster), "--port", str(router_port), "--token", TOKEN,
                        "--slo-ttft", "0.5", "--slo-tpot", "0.025"], tmp_path / "serve.log")
        procs.append(serve)

        def router_up() -> bool:
            try:
                return httpx.get(url + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(router_up, 60), (tmp_path / "serve.log").read_text()
        deploy = _start(["deploy", "--controller", str(ROOT / "agents" / "checkpoints" / "default"), "--router", url,
                         "--token", TOKEN, "--interval", "200ms", "--steps", "60", "--log", str(tmp_path / "d.jsonl")],
                        tmp_path / "deploy.log")
        procs.append(deploy)
        assert wait_until(lambda: "deploying ckpt:default" in (tmp_path / "deploy.log").read_text()
                          or deploy.poll() is not None, 90), (tmp_path / "deploy.log").read_text()

        pids = json.loads(cluster.read_text())["launch"]["pids"]
        killed = []

        def kill_one() -> None:   # a decode instance dies mid-load; launch restarts it
            killed.append(time.monotonic())
            os.killpg(pids[2], signal.SIGKILL)

        out = asyncio.run(load(url, total=240, concurrency=24, max_tokens=16, prompt_len=300, during=kill_one))
        deploy.wait(60)
        log = (tmp_path / "deploy.log").read_text()
        assert deploy.returncode == 0, log

        state = httpx.get(url + "/state", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
        flips = [f for f in state["flips"] if f["source"] == "ckpt:default"]
        assert flips, f"the checkpoint made no flip:\n{log}"
        steps = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
        assert any(s["obs"] and s["obs"]["arrivals"] > 0 and s["flips"] for s in steps), "no flip under load"
        assert not [o for o in out if o.status == 503]
        for k, o in enumerate(out):
            if o.ok:
                assert o.tokens == expected_tokens(prompt(k, 300), 16), k
            else:   # only a stream the killed instance was sending
                assert o.started_streaming and "failed mid-stream" in o.error, (k, o)
        assert sum(o.ok for o in out) >= len(out) - 24
        # launch restarted the killed instance; the cluster file names the new process
        assert wait_until(lambda: json.loads(cluster.read_text())["launch"]["restarts"][2] == 1, 30), \
            (tmp_path / "launch.log").read_text()
        assert "instance 2 is back" in (tmp_path / "launch.log").read_text() or \
            wait_until(lambda: "instance 2 is back" in (tmp_path / "launch.log").read_text(), 30)
        assert launch.poll() is None   # the launcher never exits on its own
    finally:
        for p in reversed(procs):
            _stop(p)
    assert "stopping instances" in (tmp_path / "launch.log").read_text()
