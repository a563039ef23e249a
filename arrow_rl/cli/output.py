"""Where the CLI writes: one console factory and one error line, shared by every command.

Why a factory: rich sizes its output to the terminal and falls back to 80 columns when stdout is a
file or a pipe, which cut tables and long lines of ``arrow-rl simulate > out.txt``. Written to a
file, output keeps its full width (``$COLUMNS`` still wins when set).
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

# Width for output that goes to a file or pipe: wide enough for every table the CLI prints.
FILE_WIDTH = 240


def make_console(stderr: bool = False) -> Console:
    """A console that wraps to the terminal on a terminal, and does not wrap into a file."""
    stream = sys.stderr if stderr else sys.stdout
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    if is_tty or os.environ.get("COLUMNS"):
        return Console(stderr=stderr, soft_wrap=stderr)
    return Console(stderr=stderr, width=FILE_WIDTH, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: <message>`` on stderr (the message is not read as rich markup, so a
    ``[field]`` in it is kept) and exit with ``code``."""
    make_console(stderr=True).print(f"[red]error:[/red] {escape(str(message))}", highlight=False)
    raise typer.Exit(code=code)


def warn(message: str) -> None:
    """``warning: <message>`` on stderr."""
    make_console(stderr=True).print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False)
