"""Output written to a file keeps its full width (issue 13 §4): every CLI command prints through
``arrow_rl.cli.output.make_console``, which does not wrap at 80 columns when stdout is not a terminal."""

from __future__ import annotations

import io
import re
from pathlib import Path

from arrow_rl.cli import output

CLI = Path(output.__file__).parent


def test_no_cli_module_builds_its_own_console():
    offenders = [f"{p.name}:{i}" for p in sorted(CLI.glob("*.py")) if p.name != "output.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\bConsole\(", line)]
    assert offenders == [], f"use arrow_rl.cli.output.make_console instead of rich Console(): {offenders}"


def test_a_console_writing_to_a_file_does_not_wrap_long_lines(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    buf = io.StringIO()
    monkeypatch.setattr("sys.stdout", buf)
    console = output.make_console()
    line = "x" * 60 + " " + "y" * 60
    console.print(line)
    assert buf.getvalue().strip() == line
