"""``--backend local|ray`` and ``--ray-address``: shared by ``suite run``, ``evaluate`` and ``train``.

Ray is an optional extra: asking for it without it installed is one error line with the install
command (exit 2), checked before any work starts.
"""

from __future__ import annotations

from typing import Optional

import typer

from arrow_rl.cli.output import fail

BACKENDS = ("local", "ray")

BACKEND_HELP = "local: worker processes on this machine; ray: Ray tasks/actors on a Ray cluster (docs/scaling.md)"
ADDRESS_HELP = ("with --backend ray: 'auto' (a cluster started with `ray start` here), HOST:PORT of its head node, "
                "or unset for a private local Ray")


def backend_option(default: str = "local") -> str:
    return typer.Option(default, "--backend", help=BACKEND_HELP)


def address_option() -> Optional[str]:
    return typer.Option(None, "--ray-address", help=ADDRESS_HELP)


def check_backend(backend: str, ray_address: Optional[str]) -> None:
    """Fail with one line on an unknown backend, a stray ``--ray-address`` or a missing Ray."""
    if backend not in BACKENDS:
        fail(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if ray_address is not None and backend != "ray":
        fail("--ray-address needs --backend ray")
    if backend == "ray":
        from arrow_rl.evaluation.ray_backend import RayUnavailable, require_ray

        try:
            require_ray()
        except RayUnavailable as exc:
            fail(str(exc))
