"""``scripts/install_live.sh`` checks before it installs (issue 13 §4), run against a stand-in Python.

The stand-in answers the script's torch-version query, writes the report of pip's dry run, and
records every pip call instead of installing anything; all else goes to the real interpreter.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts/install_live.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or platform.machine() != "x86_64",
                                reason="install_live.sh's CPU path runs on x86_64 Linux with bash")

STANDIN = """#!/usr/bin/env bash
echo "$*" >> "$STANDIN_LOG"
if [ "$1" = "-c" ] && [[ "$2" == *'version("torch")'* ]]; then
  [ -n "$STANDIN_TORCH" ] && echo "$STANDIN_TORCH"
  exit 0
fi
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  if [[ " $* " == *" --dry-run "* ]]; then
    args=("$@")
    for i in "${!args[@]}"; do
      [ "${args[$i]}" = "--report" ] && cp "$STANDIN_REPORT" "${args[$((i + 1))]}"
    done
  fi
  exit 0
fi
exec "$REAL_PYTHON" "$@"
"""


def _run(tmp_path: Path, torch: str, report: dict, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    py = tmp_path / "python"
    py.write_text(STANDIN)
    py.chmod(0o755)
    (tmp_path / "report.json").write_text(json.dumps(report))
    log = tmp_path / "calls.log"
    log.write_text("")
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHON": str(py), "STANDIN_LOG": str(log), "STANDIN_TORCH": torch,
                            "STANDIN_REPORT": str(tmp_path / "report.json"), "REAL_PYTHON": sys.executable,
                            **env})
    pip_calls = [ln for ln in log.read_text().splitlines() if ln.startswith("-m pip ")]
    return r, pip_calls


def _numpy_report(version: str) -> dict:
    return {"install": [{"metadata": {"name": "numpy", "version": version}}]}


@pytest.mark.parametrize("torch", ["2.13.0", ""], ids=["cuda-build", "no-torch"])
def test_without_the_cpu_build_of_torch_it_says_how_to_get_it_and_installs_nothing(tmp_path, torch):
    r, pip_calls = _run(tmp_path, torch, {"install": []})
    assert r.returncode == 1
    assert "torch==2.13.0+cpu" in r.stderr and "--index-url https://download.pytorch.org/whl/cpu" in r.stderr
    assert pip_calls == []


def test_it_stops_rather_than_change_numpy_in_the_users_venv(tmp_path):
    r, pip_calls = _run(tmp_path, "2.13.0+cpu", _numpy_report("0.0.1"))
    assert r.returncode == 1
    assert "would change numpy" in r.stderr and "ARROW_RL_ALLOW_NUMPY_CHANGE=1" in r.stderr
    assert len(pip_calls) == 1 and "--dry-run" in pip_calls[0]  # asked pip, installed nothing


@pytest.mark.parametrize("report,env", [({"install": []}, {}),
                                        (_numpy_report("0.0.1"), {"ARROW_RL_ALLOW_NUMPY_CHANGE": "1"})],
                         ids=["numpy-unchanged", "numpy-change-accepted"])
def test_the_big_install_shows_pips_progress(tmp_path, report, env):
    r, pip_calls = _run(tmp_path, "2.13.0+cpu", report, **env)
    install = [c for c in pip_calls if c.startswith("-m pip install -e") and "[live]" in c]
    assert len(install) == 1, (pip_calls, r.stdout, r.stderr)
    assert " -q" not in f" {install[0]} " and "--quiet" not in install[0]
    assert "about 3.5 GB" in r.stdout


def test_the_readme_says_how_to_install_on_an_ordinary_machine():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in readme
