"""Learned controllers for arrow-rl: training (SB3 + imitation of Arrow), checkpoints, and one
``load_controller`` that returns a ``Controller`` for any spec.

    load_controller("arrow", num_instances=8)          # the Arrow interval controller
    load_controller("static:4", num_instances=8)       # any spec of arrow_rl.controllers.registry
    load_controller("agents/checkpoints/default")      # a trained checkpoint directory

SECURITY: a checkpoint's ``model.zip`` and ``vecnormalize.pkl`` are pickles; loading one can run
arbitrary code. Load only checkpoints you created or trust.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "default"


def is_checkpoint_spec(spec: str) -> bool:
    """A spec names a checkpoint when it is an existing directory or looks like a path."""
    p = Path(spec)
    return p.is_dir() or "/" in spec or spec.endswith(("/", "\\")) or spec.startswith(".")


def load_controller(spec: str | Path, num_instances: int | None = None, name: str | None = None) -> Any:
    """A ``Controller`` for ``spec``: a checkpoint directory, or a heuristic spec ("arrow",
    "static:4", ...) delegated to ``arrow_rl.controllers.registry``.

    Heuristic specs may need ``num_instances`` (e.g. a static split). For checkpoints the cluster
    is checked at ``reset``: a mismatch raises ``agents.checkpoint.CheckpointMismatchError``.
    """
    spec_s = str(spec)
    if isinstance(spec, Path) or is_checkpoint_spec(spec_s):
        from agents.controller import CheckpointController

        path = Path(spec_s)
        if not path.exists():
            from agents.checkpoint import CheckpointError

            raise CheckpointError(f"{spec_s}: checkpoint directory not found")
        return CheckpointController.load(path, name=name)
    from arrow_rl.controllers.registry import make_policy

    if num_instances is None:
        raise ValueError(f"load_controller({spec_s!r}) needs num_instances for a heuristic controller")
    policy = make_policy(spec_s, num_instances)
    if policy.controller is None:
        raise ValueError(f"controller spec {spec_s!r} has no interval controller (policy {policy.name!r})")
    return policy.controller


def load_checkpoint(path: str) -> Any:
    """The ``arrow_rl.checkpoint_loaders`` entry point: a saved controller from its directory."""
    return load_controller(Path(path))


__all__ = ["DEFAULT_CHECKPOINT", "is_checkpoint_spec", "load_checkpoint", "load_controller"]
