"""Test-session setup."""

from arrow_rl.controllers.registry import checkpoint_loaders, register_checkpoint_loader

# An editable install made before the ``arrow_rl.checkpoint_loaders`` entry point existed lacks it
# (pip regenerates entry points only on reinstall); register the agents loader by hand then.
if "agents" not in checkpoint_loaders():
    from agents import load_checkpoint

    register_checkpoint_loader("agents", load_checkpoint)
