"""Where the CLI writes: one console factory and one error line, shared by every command.

Why a factory: rich sizes its output to the terminal and falls back to 80 columns when stdout is a
file or a pipe, which cut tables and long lines of ``arrow-rl simulate > out.txt``. Written to a
file, output keeps its full width (``$COLUMNS`` still wins when set).
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

try:   # typer >= 0.22 carries its own copy of click; its exceptions are the ones raised
    from typer._click.exceptions import MissingParameter
except ImportError:  # pragma: no cover - older typer on plain click
    from click.exceptions import MissingParameter

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


class StyledErrorsGroup(typer.core.TyperGroup):
    """The ``arrow-rl`` command group: a bad option value (``--jobs 0``, ``--seed -1``) is reported as
    the same one ``error:`` line as every value the commands check themselves, instead of click's
    usage box. Missing options and unknown ones keep the box: there the usage is the help."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except typer.BadParameter as exc:
            if isinstance(exc, MissingParameter):
                raise
            hint = exc.param_hint if isinstance(exc.param_hint, str) else None
            if hint is None and exc.param is not None:
                hint = " / ".join(f"'{o}'" for o in getattr(exc.param, "opts", [])[:1]) or None
            fail(f"invalid value for {hint}: {exc.message}" if hint else exc.message)
