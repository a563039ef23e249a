"""``arrow-rl train`` and ``arrow-rl tune``: the agents package's command-line front end.

    arrow-rl train --config configs/train/X.yaml [--backend ray [--ray-address ADDR]] [--out DIR]
    arrow-rl tune --config X.yaml --out best.yaml [--num-samples N] [--ray-address ADDR] [--json trials.json]

``train`` trains a controller from a YAML config (docs/agents.md); ``tune`` runs a Ray Tune search
over the config's ``tune:`` section (agents.tune, docs/scaling.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def train_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="Training config YAML (configs/train/*.yaml)."),
    seed: Optional[int] = typer.Option(None, min=0, max=2**32 - 1, help="Override the config's seed."),
    n_timesteps: Optional[int] = typer.Option(None, "--n-timesteps", help="Override the RL step budget."),
    n_envs: Optional[int] = typer.Option(None, "--n-envs", help="Override the number of parallel envs."),
    vec_env: Optional[str] = typer.Option(None, "--vec-env", help="Override: dummy | subproc | ray."),
    backend: Optional[str] = typer.Option(
        None, "--backend", help="ray: env workers as Ray actors (vec_env: ray, docs/scaling.md); local: the "
        "config's dummy/subproc envs (default: as the config says)"),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="with --backend ray: auto, HOST:PORT of the head node, or unset for a private "
        "local Ray"),
    init_from: Optional[Path] = typer.Option(
        None, "--init-from", help="Override the config's init_from: start RL from this checkpoint's weights "
        "(fine-tuning; needs pretrain.enabled: false)."),
    out: Optional[Path] = typer.Option(
        None, help="Also copy the selected checkpoint (best held-out, else final; eval.keep) to this directory."
    ),
    log_dir: Optional[Path] = typer.Option(None, "--log-dir", help="Run directory root (default: the config's log_dir, 'runs')."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Train PPO / MaskablePPO / DQN (optionally cloned from Arrow first) and write a checkpoint.

    TensorBoard: tensorboard --logdir runs
    """
    from arrow_rl.cli.output import fail, make_console

    from agents.config import ConfigError, load_config
    from agents.train import export_checkpoint, train

    from arrow_rl.cli.backend import check_backend

    console = make_console()
    if backend is not None:
        check_backend(backend, ray_address)
        if vec_env is not None and (vec_env == "ray") != (backend == "ray"):
            fail(f"--vec-env {vec_env} contradicts --backend {backend}")
    elif ray_address is not None:
        fail("--ray-address needs --backend ray")
    try:
        cfg = load_config(config, {"seed": seed, "n_timesteps": n_timesteps, "n_envs": n_envs, "vec_env": vec_env,
                                   "init_from": str(init_from) if init_from is not None else None})
    except ConfigError as exc:
        fail(str(exc))
    cfg = _with_backend(cfg, backend, ray_address)
    console.print(f"training [bold]{cfg.name}[/bold] ({cfg.algo}, seed {cfg.seed}, {cfg.n_envs} {cfg.vec_env} envs)")
    try:
        result = train(cfg, run_root=log_dir, progress=progress, on_message=console.print)
    except (ValueError, OSError) as exc:  # env-config validation errors name the field
        fail(str(exc))
    _print_result(console, result)
    if out is not None:
        dest = export_checkpoint(result, out)
        console.print(f"checkpoint written to {dest} (the {result.selected_dir.name} one)")

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


def _with_backend(cfg, backend: Optional[str], ray_address: Optional[str]):
    """The config with ``--backend`` applied: ray turns its envs into Ray actors (at ``ray_address``),
    local turns a ray config back into in-process envs."""
    from arrow_rl.cli.backend import check_backend

    if backend == "ray":
        cfg = cfg.model_copy(update={"vec_env": "ray", "ray": cfg.ray.model_copy(
            update={"address": ray_address} if ray_address else {})})
    elif backend == "local" and cfg.vec_env == "ray":
        cfg = cfg.model_copy(update={"vec_env": "dummy"})
    if cfg.vec_env == "ray":
        check_backend("ray", None)  # a config that says vec_env: ray needs Ray installed too
    return cfg


def _print_result(console, result) -> None:
    """Where the run and its checkpoints are, and the last held-out evaluation."""
    console.print(f"run directory: {result.run_dir}")
    console.print(f"final checkpoint: {result.final_dir}")
    if result.best_dir is not None:
        console.print(f"best checkpoint: {result.best_dir}")
    evals = result.report.get("evaluations") or []
    if evals:
        last = evals[-1]
        console.print(f"last held-out evaluation: attainment {last['attainment']:.3f}, "
                      f"serving-rate estimate vs Arrow {last.get('serving_rate_vs_arrow', float('nan')):.3f}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("tune")(tune_cmd)
