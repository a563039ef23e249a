"""``arrow-rl checkpoint export``: your own SB3 model as a checkpoint the other commands accept.

    arrow-rl checkpoint export MODEL.zip --out DIR [--env-config FILE | --env-id ID]
                               [--vecnormalize FILE] [--algo ppo|maskable_ppo|dqn] [--name NAME] [--force]

A model trained with a plain SB3 script on ``gymnasium.make("arrow_rl/PDCluster-v0")`` has no
``metadata.json``; this writes one from the env config it was trained with (``agents.export``), so
``evaluate --controllers DIR``, ``suite run --controllers DIR`` and ``deploy --controller DIR`` load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Checkpoints: export your own SB3 model as one (docs/agents.md).",
                        no_args_is_help=True)

    @group.command("export")
    def export_cmd(
        model: Path = typer.Argument(..., help="the SB3 model file (model.save(...) wrote it: a .zip)"),
        out: Path = typer.Option(..., "--out", "-o", help="checkpoint directory to write"),
        env_config: Optional[Path] = typer.Option(
            None, "--env-config", help="the env config the model was trained on: a training YAML (its env: block) "
            "or an env YAML (configs/env/*.yaml); default: the registered env's own config"),
        env_id: str = typer.Option("arrow_rl/PDCluster-v0", "--env-id",
                                   help="the registered env id the model was trained on (gymnasium.make's first argument)"),
        vecnormalize: Optional[Path] = typer.Option(
            None, "--vecnormalize", help="VecNormalize statistics saved beside the model (VecNormalize.save), if it used them"),
        algo: Optional[str] = typer.Option(None, "--algo", help="ppo | maskable_ppo | dqn (default: read from the zip)"),
        name: Optional[str] = typer.Option(None, "--name", help="the checkpoint's name (default: the directory's)"),
        force: bool = typer.Option(False, "--force", help="replace --out if it exists"),
    ) -> None:
        """Write an SB3 model trained on a registered PDCluster env as an arrow-rl checkpoint.

        SECURITY: loading the model unpickles it; export only models you trust.
        """
        from arrow_rl.cli.output import fail, make_console

        from agents.checkpoint import CheckpointError
        from agents.config import ALGOS
        from agents.export import export_model, load_sb3_model

        if algo is not None and algo not in ALGOS:
            fail(f"--algo: {algo!r} is not one of {', '.join(ALGOS)}")
        if env_config is not None and not env_config.is_file():
            fail(f"--env-config: {env_config}: file not found")
        if not model.is_file():
            fail(f"{model}: model file not found (the path model.save() wrote, with its .zip)")
        try:
            sb3_model = load_sb3_model(model, algo)
            dest = export_model(sb3_model, out, env_config=env_config, env_id=env_id, vecnormalize=vecnormalize,
                                name=name, overwrite=force, extra={"exported_from": str(model)})
        except (ValueError, OSError) as exc:   # CheckpointError and env-config errors name the file and field
            fail(str(exc))
        make_console().print(f"checkpoint written to {dest} ({sb3_model.__class__.__name__}); try: arrow-rl evaluate "
                             f"... --controllers arrow,{dest}")

    app.add_typer(group, name="checkpoint")
