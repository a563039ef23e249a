"""Arrow lives in one package, and its core (everything in ``arrow_rl`` below ``arrow_rl.cli``) never
imports the agents package: only the CLI, the top layer, may, and only when a command runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_importing_arrow_rl_and_running_the_registry_does_not_import_agents():
    code = textwrap.dedent("""
        import sys
        import arrow_rl, arrow_rl.arrow, arrow_rl.controllers, arrow_rl.evaluation.suite, arrow_rl.cli
        from arrow_rl.controllers.registry import expand_spec, make_policy
        for spec in ["arrow", "arrow-interval", "colocated", "dynamo", "oracle", *expand_spec("static-best", 4)]:
            make_policy(spec, 4)
        assert not any(m == "agents" or m.startswith("agents.") for m in sys.modules), "agents imported"
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert res.returncode == 0, res.stderr


def _names_agents(path: Path) -> bool:
    text = path.read_text(encoding="utf-8")
    return "import agents" in text or "from agents" in text


def test_no_module_of_the_core_names_the_agents_package():
    cli = ROOT / "arrow_rl" / "cli"
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "arrow_rl").rglob("*.py")
                 if cli not in p.parents and _names_agents(p)]
    assert offenders == [], offenders


def test_only_the_agents_front_end_commands_name_the_agents_package():
    # the train and checkpoint-export commands are the agents package's CLI front ends; they import
    # it inside the command, so ``import arrow_rl.cli`` stays free of it (the registry test above)
    named = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "arrow_rl" / "cli").rglob("*.py") if _names_agents(p))
    assert named == ["arrow_rl/cli/checkpoint.py", "arrow_rl/cli/train.py"], named


def test_a_registered_checkpoint_loader_is_used_for_existing_paths(tmp_path):
    from arrow_rl.controllers.baselines import NoFlipController
    from arrow_rl.controllers.registry import _CHECKPOINT_LOADERS, make_policy, register_checkpoint_loader

    saved = dict(_CHECKPOINT_LOADERS)
    try:
        _CHECKPOINT_LOADERS.clear()
        register_checkpoint_loader("fake", lambda path: NoFlipController(f"ckpt:{Path(path).name}"))
        policy = make_policy(str(tmp_path), 4)
        assert policy.name == f"ckpt:{tmp_path.name}" and policy.extra["checkpoint"] == str(tmp_path)
        assert policy.router.enable_flips is False  # Alg. 1 routing, the checkpoint owns the flips
    finally:
        _CHECKPOINT_LOADERS.clear()
        _CHECKPOINT_LOADERS.update(saved)
