"""The live CLI end to end against fake instances: serve (subprocess), bench, deploy, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from arrow_rl.cli import app
from arrow_rl.cli.live import parse_duration
from arrow_rl.cluster.live.fake_vllm import FakeVllm, ServerThread

TOKEN = "cli-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Two fake instances and `arrow-rl serve` in a subprocess."""
    tmp = tmp_path_factory.mktemp("cli")
    fakes = [ServerThread(FakeVllm(name=f"f{i}").app).start() for i in range(3)]
    port = _free_port()
    journal = tmp / "router.jsonl"
    cmd = [sys.executable, "-c", "from arrow_rl.cli import main; main()", "serve", "--instance", f"{fakes[0].url}=prefill",
           "--instance", f"{fakes[1].url}=prefill", "--instance", f"{fakes[2].url}=decode",
           "--port", str(port), "--token", TOKEN, "--journal", str(journal), "--routing", "least-loaded"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            out = proc.stdout.read() if proc.stdout else ""
            proc.kill()
            raise RuntimeError(f"arrow-rl serve did not come up:\n{out}")
        time.sleep(0.2)
    yield url, tmp, journal
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(10)
    for f in fakes:
        f.stop()


def test_parse_duration():
    assert parse_duration("1s") == 1.0 and parse_duration("250ms") == 0.25 and parse_duration("2") == 2.0
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_bench_replays_a_trace_and_prints_the_simulate_table(served):
    url, tmp, journal = served
    trace = tmp / "trace.csv"
    trace.write_text("arrival_s,input_tokens,output_tokens\n" + "".join(f"{k * 0.05:.2f},{100 + k},{4 + k % 3}\n" for k in range(8)))
    out_json = tmp / "bench.json"
    bj = tmp / "bench.jsonl"
    r = CliRunner().invoke(app, ["bench", "--router", url, "--workload", str(trace), "--rate-scale", "2",
                                 "--journal", str(bj), "--json", str(out_json)])
    assert r.exit_code == 0, r.output
    assert "TTFT" in r.output and "TPOT" in r.output and "8 finished / 8 offered" in r.output
    s = json.loads(out_json.read_text())
    assert s["num_finished"] == 8 and s["ttft_mean"] > 0
    lines = [json.loads(x) for x in bj.read_text().splitlines()]
    assert sorted(x["output_tokens"] for x in lines) == sorted(4 + k % 3 for k in range(8))  # max_tokens + ignore_eos
    # The router's own journal: written in batches off the request path (journal_flush_s).
    deadline = time.time() + 30  # returns as soon as the journal has them
    while len(journal.read_text().splitlines()) < 8 and time.time() < deadline:
        time.sleep(0.1)
    assert len(journal.read_text().splitlines()) >= 8


def test_bench_drives_chat_and_records_the_instances_token_counts(served):
    url, tmp, _ = served
    trace = tmp / "chat.csv"
    trace.write_text("arrival_s,input_tokens,output_tokens\n" + "".join(f"{k * 0.05:.2f},{20 + k},{3 + k % 2}\n"
                                                                         for k in range(6)))
    bj = tmp / "chat.jsonl"
    r = CliRunner().invoke(app, ["bench", "--router", url, "--workload", str(trace), "--api", "chat",
                                 "--journal", str(bj)])
    assert r.exit_code == 0, r.output
    assert "6 finished / 6 offered" in r.output
    lines = [json.loads(x) for x in bj.read_text().splitlines()]
    assert all(x["ok"] for x in lines)
    assert sorted(x["output_tokens"] for x in lines) == sorted(3 + k % 2 for k in range(6))
    # The fake counts one token per character of the word message: the record has the instance's count.
    assert all(x["input_tokens"] > 20 + 6 for x in lines)


def test_bench_rejects_a_bad_rate_scale(served):
    url, _, _ = served
    r = CliRunner().invoke(app, ["bench", "--router", url, "--workload", "azure-conv", "--rate-scale", "0"])
    assert r.exit_code == 2 and "rate-scale" in r.output


def test_deploy_static_sets_the_split_and_logs_decisions(served, tmp_path):
    url, _, _ = served
    log = tmp_path / "decisions.jsonl"
    r = CliRunner().invoke(app, ["deploy", "--controller", "static:1", "--router", url, "--interval", "200ms",
                                 "--token", TOKEN, "--steps", "2", "--log", str(log)])
    assert r.exit_code == 0, r.output
    entries = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(entries) == 2 and entries[0]["obs"]["roles"] == ["prefill", "decode", "decode"]
    state = httpx.get(url + "/state", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert state["routing"] == "arrow-noflip"
    # put the split back for other tests
    httpx.post(url + "/roles", json={"id": 1, "role": "prefill"}, headers={"Authorization": f"Bearer {TOKEN}"})


def test_deploy_without_token_or_with_bad_controller_fails_clearly(served, monkeypatch):
    url, _, _ = served
    monkeypatch.delenv("ARROW_RL_TOKEN", raising=False)
    r = CliRunner().invoke(app, ["deploy", "--controller", "arrow", "--router", url])
    assert r.exit_code == 2 and "token" in r.output
    r = CliRunner().invoke(app, ["deploy", "--controller", "nonsense", "--router", url, "--token", TOKEN])
    assert r.exit_code == 2 and "unknown controller" in r.output
    r = CliRunner().invoke(app, ["deploy", "--controller", "arrow", "--router", url, "--token", "wrong"])
    assert r.exit_code == 2 and "bad token" in r.output
    r = CliRunner().invoke(app, ["deploy", "--controller", "mpc", "--router", url, "--token", TOKEN])
    assert r.exit_code == 2 and "not on a live cluster" in r.output


def test_deploy_reports_a_router_that_times_out_during_setup(served, monkeypatch):
    # Seen on a loaded 2-core box: the router took > 5 s to answer POST /routing and deploy died
    # with a traceback. It must say which setup step failed and exit 2.
    from arrow_rl.cluster.live.cluster import AdminClient

    url, _, _ = served

    def slow(self, policy):
        raise httpx.ReadTimeout("timed out")
    monkeypatch.setattr(AdminClient, "set_routing", slow)
    r = CliRunner().invoke(app, ["deploy", "--controller", "arrow", "--router", url, "--token", TOKEN])
    assert r.exit_code == 2, r.output
    assert "could not set the routing policy (ReadTimeout: timed out)" in " ".join(r.output.split())
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_deploy_stops_cleanly_on_ctrl_c(served):
    url, _, _ = served
    env = {**os.environ, "ARROW_RL_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-c", "from arrow_rl.cli import main; main()", "deploy", "--controller", "arrow", "--router", url,
                             "--interval", "200ms"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            # A shell without job control starts background jobs with SIGINT ignored, and a
                            # child inherits that: give the CLI the default disposition, as in a terminal.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    lines = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if line.strip().startswith("[   1]"):
            break
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    text = "".join(lines) + out
    assert proc.returncode == 0, text
    assert "stopped (Ctrl-C)" in text


def _gitignored(name: str, patterns: list[str]) -> bool:
    """Whether the repository-root path ``name`` (its first component) matches a root .gitignore line."""
    import fnmatch
    from pathlib import PurePosixPath

    first = PurePosixPath(name).parts[0]
    return any(fnmatch.fnmatch(first, p.strip("/")) for p in patterns if p and not p.startswith("#"))


def test_files_the_commands_write_by_default_are_gitignored():
    """Run from the repository root, no command leaves an untracked file behind (issue 13 §4): every
    path an option defaults to, the shipped router config's journal, and the files the docs' live
    walkthrough names."""
    import inspect
    import re
    from pathlib import Path

    import typer
    import yaml

    root = Path(__file__).resolve().parents[1]
    patterns = [ln.strip() for ln in (root / ".gitignore").read_text().splitlines()]
    written: set[str] = set()

    def walk(group) -> None:
        for cmd in group.registered_commands:
            for p in inspect.signature(cmd.callback).parameters.values():
                d = p.default
                if isinstance(d, typer.models.OptionInfo) and isinstance(d.default, Path):
                    written.add(str(d.default))
        for sub in group.registered_groups:
            walk(sub.typer_instance)

    walk(app)
    assert {"cluster.json", "live-cluster", "profiles.json"} <= written  # the walk finds the defaults
    written.add(yaml.safe_load((root / "configs/live/router.yaml").read_text())["journal"])
    doc = (root / "docs/live_cluster.md").read_text()
    written |= set(re.findall(r"--(?:journal|log|json|out|cluster-file) (\S+\.jsonl?)\b", doc))
    assert {"router.jsonl", "decisions.jsonl", "bench.jsonl"} <= written
    assert [w for w in sorted(written) if not _gitignored(w, patterns)] == []
