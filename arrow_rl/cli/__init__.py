"""The ``arrow-rl`` command line: a thin layer over the library, one module per command.

Each command module exposes ``register(app)``; add new modules to ``COMMAND_MODULES``.
"""

from __future__ import annotations

import importlib
import importlib.util

import typer

from arrow_rl.cli.output import StyledErrorsGroup

app = typer.Typer(
    cls=StyledErrorsGroup,
    name="arrow-rl",
    help="Adaptive prefill/decode instance scheduling (Arrow) as an RL environment, with an emulator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

COMMAND_MODULES: tuple[str, ...] = (
    "arrow_rl.cli.train",
    "arrow_rl.cli.simulate",
    "arrow_rl.cli.perf_report",
    "arrow_rl.cli.workload",
    "arrow_rl.cli.evaluate",
    "arrow_rl.cli.suite",
    "arrow_rl.cli.live",
    "arrow_rl.cli.fidelity",
    "arrow_rl.cli.checkpoint",
)

for _name in COMMAND_MODULES:
    if importlib.util.find_spec(_name) is not None:  # modules land one command at a time
        importlib.import_module(_name).register(app)


def main() -> None:
    app()
