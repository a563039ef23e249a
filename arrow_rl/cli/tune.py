"""``arrow-rl tune``: Ray Tune search over a training config's ``tune:`` section (agents.tune).

    arrow-rl tune --config configs/train/X.yaml --out best.yaml [--num-samples N]
        [--ray-address ADDR] [--runs DIR] [--json trials.json]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("tune")
    def tune_cmd(
        config: Path = typer.Option(..., "--config", "-c", help="training config YAML with a tune: section"),
        out: Path = typer.Option(..., "--out", help="write the best trial's training config here (YAML)"),
        num_samples: Optional[int] = typer.Option(None, "--num-samples", min=1, help="override tune.num_samples"),
        runs: Path = typer.Option(Path("runs/tune"), "--runs", help="trials' run directories and Tune's records"),
        json_out: Optional[Path] = typer.Option(None, "--json", help="also write every trial's values and score"),
        ray_address: Optional[str] = typer.Option(
            None, "--ray-address", help="auto, HOST:PORT of a Ray head node, or unset for a private local Ray"),
    ) -> None:
        """Search hyperparameters with Ray Tune; each trial trains, then is scored by its serving rate on
        the suite's train scenarios (never its test scenarios). Writes the best config (docs/scaling.md)."""
        from arrow_rl.cli.backend import check_backend
        from arrow_rl.cli.output import fail, make_console

        check_backend("ray", ray_address)
        from agents.config import ConfigError
        from agents.tune import OBJECTIVE, load_tune_job, run_tune, write_best

        console = make_console()
        try:
            job = load_tune_job(config)
        except ConfigError as exc:
            fail(str(exc))
        n = num_samples or job.spec.num_samples
        console.print(f"tuning [bold]{config}[/bold]: {n} trials over {', '.join(job.spec.space)}; objective "
                      f"{OBJECTIVE} on {', '.join(job.scenarios)} (suite {job.suite_path.name}, train split)")
        try:
            result = run_tune(job, runs, address=ray_address, num_samples=num_samples)
        except ValueError as exc:
            fail(str(exc))
        for t in result.trials:
            console.print(f"  {t[OBJECTIVE]:.4g} req/s  {json.dumps(t['params'])}")
        console.print(f"best: {result.best_score:.4g} req/s with {json.dumps(result.best_params)}")
        console.print(f"wrote {write_best(result, job, out)} (checkpoint: {result.best_checkpoint})")
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps({"objective": OBJECTIVE, "scenarios": job.scenarios,
                                            "trials": result.trials}, indent=2) + "\n", encoding="utf-8")
            console.print(f"wrote {json_out}")
