"""Training: SB3 PPO / sb3-contrib MaskablePPO / DQN on ``PDClusterEnv``, optionally starting from a
clone of the Arrow heuristic (behaviour cloning + DAgger, ``agents.imitation``).

One call, ``train(config)``, does the whole run and leaves::

    runs/<name>__<seed>__<unix time>/
      config.yaml               the validated config (reproduces the run with its seed)
      events.out.tfevents.*     TensorBoard: SB3 training curves, pretrain/*, eval/* custom scalars
      progress.csv              the same scalars as CSV
      checkpoints/clone/        the cloned policy before RL (when pretraining)
      checkpoints/best/         best held-out evaluation (serving-rate estimate, then attainment)
      checkpoints/step_<N>/     every ``checkpoint_every`` RL steps, when set
      checkpoints/final/        the policy at the end of training
      report.json               pretraining agreement, evaluations, timings

Every random piece is seeded from ``config.seed``: the model (SB3 seeds python/numpy/torch), the
vectorized envs (seed + rank), the imitation rollouts (a numpy Generator), the BC minibatches (a
torch Generator) and the held-out evaluation episodes (fixed seeds from ``eval.seed``).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger, configure
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize

from agents.checkpoint import MODEL_FILE, CheckpointError, check_spaces, read_metadata, save_checkpoint
from agents.config import TrainConfig, algo_class, build_hyperparams, build_policy_kwargs
from agents.envs_bridge import check_traces, env_config, env_thunk, is_toy, make_env
from agents.export import env_metadata, training_distribution_of  # noqa: F401 (re-exported)
from agents.evaluation import EvalSummary, HeldOutEvaluator, student_chooser, teacher_chooser
from agents.holdout import apply_holdout
from agents.imitation import pretrain
from agents.label_workers import EnvWorkers


@dataclass
class TrainResult:
    run_dir: Path
    final_dir: Path
    best_dir: Path | None
    clone_dir: Path | None
    report: dict[str, Any] = field(default_factory=dict)
    keep: str = "best"   # EvalConfig.keep

    @property
    def selected_dir(self) -> Path:
        """The checkpoint to ship: the best held-out one when evaluation ran (and ``eval.keep`` is
        ``best``), else the final one."""
        if self.keep == "final":
            return self.final_dir
        return self.best_dir if self.best_dir is not None and self.best_dir.exists() else self.final_dir


def run_name(config: TrainConfig, now: float | None = None) -> str:
    """CleanRL-style run name ``<name>__<seed>__<unix time>``."""
    return f"{config.name}__{config.seed}__{int(now if now is not None else time.time())}"


def build_vec_env(config: TrainConfig) -> VecEnv:
    """``n_envs`` copies of the training env in a Dummy, Subproc or Ray VecEnv, optionally normalized.
    With ``pretrain.teacher_during_rl: false`` these (RL) envs run without the teacher's labels."""
    kwargs = config.env.env_kwargs()
    if not config.pretrain.teacher_during_rl and not is_toy(config.env.id):
        kwargs = {**kwargs, "teacher_in_info": False}
    env_config(config.env.id, kwargs)  # validate once here: a bad field fails before workers start
    thunks = [env_thunk(config.env.id, kwargs) for _ in range(config.n_envs)]
    if config.vec_env == "ray":
        from agents.ray_vec_env import RayVecEnv

        venv: VecEnv = RayVecEnv(thunks, envs_per_worker=config.ray.envs_per_worker, address=config.ray.address,
                                 cpus_per_worker=config.ray.cpus_per_worker, start_timeout_s=config.ray.start_timeout_s)
    elif config.vec_env == "subproc" and config.n_envs > 1:
        venv = SubprocVecEnv(thunks, start_method="spawn")
    else:
        venv = DummyVecEnv(thunks)
    venv.seed(config.seed)
    norm = config.normalize_config
    if norm is not None:
        venv = VecNormalize(venv, norm_obs=norm.norm_obs, norm_reward=norm.norm_reward, clip_obs=norm.clip_obs,
                            clip_reward=norm.clip_reward, gamma=norm.gamma)
    return venv


def labelling_envs(config: TrainConfig) -> Any:
    """The ``pretrain.label_envs`` (default ``n_envs``) envs imitation labels on, with the teacher in
    their ``info``. ``vec_env: subproc`` runs each in its own process (``EnvWorkers``), stepped
    independently: the lookahead teacher plans inside each env's step, so labelling, the slow half
    of a privileged-teacher run, then uses every core, without a lock-step in which every env
    waits for the slowest. Otherwise plain envs, stepped in turn in this process. Same seed, same
    samples either way (``imitation.collect``)."""
    n = config.pretrain.label_envs or config.n_envs
    if config.vec_env == "subproc" and n > 1:
        return EnvWorkers([env_thunk(config.env.id, config.env.env_kwargs(), monitor=False) for _ in range(n)])
    return [make_env(config.env.id, config.env.env_kwargs()) for _ in range(n)]


def preflight(config: TrainConfig) -> None:
    """Check what the schema cannot before any directory, model or worker exists: the env block
    resolves to a valid ``EnvConfig``, every trace it (or the eval block) names loads, and
    ``init_from`` is a readable checkpoint."""
    check_traces(config.env.id, config.env.env_kwargs(), "env")
    if config.init_from is not None:
        try:
            read_metadata(config.init_from)
        except CheckpointError as exc:
            raise ValueError(f"init_from: {exc}") from None
    if config.eval.enabled:
        block = config.eval_env_block()
        check_traces(block.id, block.env_kwargs(), "eval.env")


def build_model(config: TrainConfig, venv: VecEnv):
    cls = algo_class(config.algo)
    return cls(
        config.policy,
        venv,
        seed=config.seed,
        device=config.device,
        policy_kwargs=build_policy_kwargs(config.policy_kwargs),
        verbose=0,
        **build_hyperparams(config),
    )


def load_initial_weights(model, config: TrainConfig) -> dict[str, Any]:
    """Copy ``config.init_from``'s network weights and optimizer state into ``model`` (fine-tuning a
    trained policy further). The metadata is checked first (algorithm, spaces, normalization), and
    only the zip's tensors are read (``set_parameters``: ``torch.load(weights_only=True)``), never
    its pickled class data. Returns the source's provenance for the new checkpoint's metadata."""
    source = Path(str(config.init_from))
    where = f"init_from: {source}"
    try:
        meta = read_metadata(source)
    except CheckpointError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if meta["algo"] != config.algo:
        raise ValueError(f"{where}: a {meta['algo']} checkpoint cannot start a {config.algo} run")
    if bool(meta.get("normalized")) != (config.normalize_config is not None):
        raise ValueError(f"{where}: the checkpoint was trained with normalize: {bool(meta.get('normalized'))}, this "
                         "config has the other; observation statistics do not carry over, so set the same")
    try:
        check_spaces(meta, model.observation_space, model.action_space, source=where)
        model.set_parameters(str(source / MODEL_FILE), exact_match=True, device=model.device)
    except CheckpointError as exc:
        raise ValueError(str(exc)) from None
    except (ValueError, RuntimeError, KeyError) as exc:   # another net_arch: state-dict shapes or names differ
        raise ValueError(f"{where}: its networks do not fit this config's policy ({' '.join(str(exc).split())[:300]}); "
                         "use the checkpoint's policy_kwargs") from None
    return {"path": str(source), "name": meta.get("name"), "created": meta.get("created"),
            "stage": (meta.get("training") or {}).get("stage")}


def checkpoint_metadata(config: TrainConfig) -> dict[str, Any]:
    """What a deployed controller needs to rebuild the observation and action mapping, plus provenance."""
    kwargs = config.env.env_kwargs()
    meta: dict[str, Any] = {
        "name": config.name,
        "algo": config.algo,
        "env_id": config.env.id,
        "seed": config.seed,
        "train_config": config.to_dict(),
    }
    cfg = env_config(config.env.id, kwargs)
    if cfg is None:
        meta["env_config"] = kwargs
        return meta
    meta.update(env_metadata(cfg))
    return meta


def _control_interval(config: TrainConfig) -> float:
    cfg = env_config(config.env.id, config.env.env_kwargs())
    return float(cfg.control_interval_s) if cfg is not None else 1.0


def _log_summary(logger: Logger, prefix: str, summary: EvalSummary) -> None:
    logger.record(f"{prefix}/attainment", summary.mean("attainment"))
    logger.record(f"{prefix}/goodput", summary.mean("goodput"))
    logger.record(f"{prefix}/flips_per_min", summary.mean("flips_per_min"))
    logger.record(f"{prefix}/reward", summary.mean("reward"))
    logger.record(f"{prefix}/serving_rate_scale", summary.serving_rate)
    for scale, m in zip(summary.scales, summary.per_scale):
        logger.record(f"{prefix}/attainment@{scale:g}", m["attainment"])


def _add_custom_scalars(logger: Logger) -> None:
    """A TensorBoard 'Custom Scalars' layout putting the agent and Arrow on the same charts."""
    from stable_baselines3.common.logger import TensorBoardOutputFormat

    layout = {
        "arrow-rl (held-out)": {
            "SLO attainment: agent vs Arrow": ["Multiline", ["eval/attainment", "eval/teacher_attainment"]],
            "goodput: agent vs Arrow": ["Multiline", ["eval/goodput", "eval/teacher_goodput"]],
            "flips per minute: agent vs Arrow": ["Multiline", ["eval/flips_per_min", "eval/teacher_flips_per_min"]],
            "serving-rate estimate / Arrow": ["Multiline", ["eval/serving_rate_vs_arrow"]],
        },
        "pretraining": {
            "agreement with Arrow": ["Multiline", ["pretrain/accuracy", "pretrain/flip_recall", "pretrain/on_policy_accuracy"]],
        },
    }
    for fmt in logger.output_formats:
        if isinstance(fmt, TensorBoardOutputFormat):
            fmt.writer.add_custom_scalars(layout)
            fmt.writer.flush()


class ArrowEvalCallback(BaseCallback):
    """Every ``freq`` environment steps: evaluate the policy on the held-out episodes, log it beside
    the teacher, and keep the best model (highest serving-rate estimate, then attainment)."""

    def __init__(self, evaluator: HeldOutEvaluator, freq: int, save_best: Callable[[], None],
                 teacher: EvalSummary | None, normalize: Callable[[np.ndarray], np.ndarray],
                 on_message: Callable[[str], None] = lambda _m: None) -> None:
        super().__init__(verbose=0)
        self.on_message = on_message   # one line per evaluation: a run's progress in a log file
        self.evaluator = evaluator
        self.freq = freq
        self.save_best = save_best
        self.teacher = teacher
        self.normalize = normalize
        self.best: tuple[float, float, float] = (-np.inf, -np.inf, -np.inf)
        self.history: list[dict[str, Any]] = []
        self._last = 0

    def evaluate_now(self) -> EvalSummary:
        summary = self.evaluator.evaluate(student_chooser(self.model, self.normalize))
        _log_summary(self.logger, "eval", summary)
        entry: dict[str, Any] = {"timesteps": int(self.num_timesteps), **summary.to_dict(),
                                 "attainment": summary.mean("attainment"), "reward": summary.mean("reward")}
        if self.teacher is not None:
            ratio = summary.serving_rate / self.teacher.serving_rate if self.teacher.serving_rate > 0 else float("nan")
            self.logger.record("eval/serving_rate_vs_arrow", ratio)
            self.logger.record("eval/teacher_attainment", self.teacher.mean("attainment"))
            self.logger.record("eval/teacher_goodput", self.teacher.mean("goodput"))
            self.logger.record("eval/teacher_flips_per_min", self.teacher.mean("flips_per_min"))
            entry["serving_rate_vs_arrow"] = ratio
        self.logger.dump(self.num_timesteps)
        key = (_nan_low(summary.serving_rate), _nan_low(summary.mean("attainment")), _nan_low(summary.mean("reward")))
        if key > self.best:
            self.best = key
            self.save_best()
            entry["saved_best"] = True
        self.history.append(entry)
        self.on_message(f"evaluation at {int(self.num_timesteps):,} steps: attainment {entry['attainment']:.3f}, "
                        f"serving-rate scale {summary.serving_rate:.3f}"
                        + (f" ({entry['serving_rate_vs_arrow']:.3f}x Arrow)" if "serving_rate_vs_arrow" in entry else "")
                        + (", kept as best" if entry.get("saved_best") else ""))
        return summary

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last >= self.freq:
            self._last = self.num_timesteps
            self.evaluate_now()
        return True


class SnapshotCallback(BaseCallback):
    """Every ``every`` RL steps, save the policy as its own checkpoint (``checkpoints/step_<N>/``), so
    the run's snapshots can be judged afterwards on several scenarios, not only by the one held-out
    evaluation that picks ``best``."""

    def __init__(self, every: int, save: Callable[[int], Any]) -> None:
        super().__init__(verbose=0)
        self.every = every
        self.save = save
        self._last = 0

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last >= self.every:
            self._last = self.num_timesteps - self.num_timesteps % self.every
            self.save(self._last)
        return True


class ProgressCallback(BaseCallback):
    """Feeds the RL steps really taken to a ``_progress`` advance function (SB3's own bar counts
    against the budget asked for, so it ended at e.g. 40,960/40,000, and draws nothing into a file)."""

    def __init__(self, advance: Callable[[int], None]) -> None:
        super().__init__(verbose=0)
        self.advance = advance
        self._seen = 0

    def _on_step(self) -> bool:
        if self.num_timesteps > self._seen:
            self.advance(self.num_timesteps - self._seen)
            self._seen = self.num_timesteps
        return True


def planned_unit(model) -> int:
    """The steps SB3 takes between two checks of the budget: one rollout (``n_steps`` per env) for
    PPO / MaskablePPO, ``train_freq`` steps per env for DQN (counted in steps), else one step per env."""
    n_envs = int(getattr(model, "n_envs", 1) or 1)
    if getattr(model, "n_steps", None):
        return int(model.n_steps) * n_envs
    freq = getattr(model, "train_freq", None)
    if freq is not None and getattr(getattr(freq, "unit", None), "value", None) == "step":
        return int(freq.frequency) * n_envs
    return n_envs


def planned_timesteps(model, total: int) -> int:
    """The steps ``model.learn(total)`` really takes: SB3 stops at the first check past the budget,
    so the budget rounds up to a whole number of ``planned_unit``s."""
    unit = planned_unit(model)
    return -(-int(total) // unit) * unit


def _nan_low(x: float) -> float:
    return x if np.isfinite(x) else -np.inf


def train(config: TrainConfig, run_root: str | Path | None = None, progress: bool = True,
          on_message: Callable[[str], None] = lambda _m: None) -> TrainResult:
    """Run one training job as described by ``config`` (see module docstring)."""
    torch.set_num_threads(1)
    preflight(config)
    t_start = time.time()
    run = _start_run(config, Path(run_root if run_root is not None else config.log_dir) / run_name(config, t_start),
                     progress, on_message)
    evaluator, teacher_summary = _held_out_evaluation(run)
    clone_dir = _imitate(run, evaluator) if run.config.pretrain.enabled else None
    callback = None
    if evaluator is not None:
        callback = ArrowEvalCallback(evaluator, run.config.eval.freq, lambda: run.save(run.best_dir, {"stage": "best"}),
                                     teacher_summary, run.normalize, on_message)
    _reinforce(run, callback)
    if callback is not None:
        run.report["evaluations"] = callback.history
    run.report["timings_s"]["total"] = time.time() - t_start
    final_dir = run.save(run.ckpt_dir / "final", {"stage": "final"})
    (run.run_dir / "report.json").write_text(json.dumps(run.report, indent=2, default=_jsonable) + "\n")
    run.venv.close()
    if evaluator is not None:
        evaluator.close()
    best_dir = run.best_dir if evaluator is not None and run.best_dir.exists() else None
    return TrainResult(run.run_dir, final_dir, best_dir, clone_dir, run.report, keep=run.config.eval.keep)


@dataclass
class _Run:
    """One training run's pieces, handed from step to step of ``train``."""

    config: TrainConfig          # with the held-out tails cut (``apply_holdout``)
    run_dir: Path
    model: Any
    venv: VecEnv
    logger: Logger
    report: dict[str, Any]
    meta: dict[str, Any]         # checkpoint metadata, from the config as written
    progress: bool
    on_message: Callable[[str], None]

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def best_dir(self) -> Path:
        return self.ckpt_dir / "best"

    @property
    def vecnorm(self) -> VecNormalize | None:
        return self.venv if isinstance(self.venv, VecNormalize) else None

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        vecnorm = self.vecnorm
        return vecnorm.normalize_obs(obs).astype(np.float32) if vecnorm is not None else obs

    def save(self, directory: Path, extra: dict[str, Any] | None = None) -> Path:
        """A checkpoint of the model now, its metadata carrying the report so far and ``extra``."""
        m = dict(self.meta)
        m["training"] = {k: v for k, v in self.report.items() if k != "config"}
        if extra:
            m["training"].update(extra)
        return save_checkpoint(directory, self.model, m, vecnormalize=self.vecnorm)


def _start_run(config: TrainConfig, run_dir: Path, progress: bool, on_message: Callable[[str], None]) -> _Run:
    """Create the run directory, logger, envs and model. Until the model exists, a failure leaves no
    run directory behind (nothing was trained)."""
    fresh = not run_dir.exists()
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    logger = None
    try:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        logger = configure(str(run_dir), ["csv"] + (["tensorboard"] if config.tensorboard else []))
        if config.tensorboard:
            _add_custom_scalars(logger)
        report: dict[str, Any] = {"run": run_dir.name, "config": config.to_dict(), "timings_s": {}}
        original = config
        config, splits = apply_holdout(config, run_dir / "data")
        venv = build_vec_env(config)
        model = _model_for(config, venv, report)
    except BaseException:
        if logger is not None:
            logger.close()
        if fresh:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if splits:
        report["holdout"] = splits
        on_message("held out: " + ", ".join(f"{s['trace']} after {s['cut_s']:.0f} s" for s in splits))
    if config.init_from is not None:
        on_message(f"starting from {config.init_from}'s weights")
    model.set_logger(logger)
    # as written: the holdout CSVs under the run directory are derived from it (and the cut times)
    meta = checkpoint_metadata(original)
    if splits:
        meta["holdout"] = [{k: v for k, v in s.items() if k in ("trace", "cut_s", "train_requests", "heldout_requests")}
                           for s in splits]
    return _Run(config, run_dir, model, venv, logger, report, meta, progress, on_message)


def _model_for(config: TrainConfig, venv: VecEnv, report: dict[str, Any]) -> Any:
    """The model on ``venv``, with ``init_from``'s weights when set (closing ``venv`` on failure)."""
    try:
        model = build_model(config, venv)
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:  # SB3's own checks, last resort
        venv.close()
        raise ValueError(f"cannot build the {config.algo} model from this config: {type(exc).__name__}: "
                         f"{' '.join(str(exc).split())}") from None
    if config.init_from is not None:
        try:
            report["init_from"] = load_initial_weights(model, config)
        except ValueError:
            venv.close()
            raise
    return model


def _held_out_evaluation(run: _Run) -> tuple[HeldOutEvaluator | None, EvalSummary | None]:
    """The held-out evaluator (``eval.enabled``) and the teacher's score on it (``eval.compare_teacher``)."""
    config = run.config
    if not config.eval.enabled:
        return None, None
    eval_block = config.eval_env_block()
    evaluator = HeldOutEvaluator(eval_block.id, eval_block.env_kwargs(), config.eval.rate_scales,
                                 config.eval.n_episodes, config.eval.seed, _control_interval(config))
    if not config.eval.compare_teacher:
        return evaluator, None
    t0 = time.time()
    teacher_summary = evaluator.evaluate(teacher_chooser)
    run.report["teacher_eval"] = teacher_summary.to_dict()
    run.report["timings_s"]["teacher_eval"] = time.time() - t0
    run.on_message(f"teacher (Arrow) on the evaluation episodes: attainment {teacher_summary.mean('attainment'):.3f}, "
                   f"serving-rate scale {teacher_summary.serving_rate:.3f}")
    return evaluator, teacher_summary


def _imitation_round_logger(logger: Logger, on_message: Callable[[str], None]) -> Callable[[int, dict[str, Any]], None]:
    """``pretrain``'s ``on_round``: each imitation round's agreement to the logger and one message."""

    def on_round(r: int, metrics: dict[str, Any]) -> None:
        train_m = metrics["train"]
        logger.record("pretrain/accuracy", train_m["accuracy"])
        logger.record("pretrain/flip_recall", train_m["flip_recall"])
        logger.record("pretrain/entropy", train_m.get("entropy", float("nan")))
        logger.record("pretrain/samples", metrics["samples"])
        logger.record("pretrain/beta", metrics["beta"])
        if "on_policy_before_fit" in metrics:
            logger.record("pretrain/on_policy_accuracy", metrics["on_policy_before_fit"]["accuracy"])
        logger.dump(r)
        on_message(f"imitation round {r} (beta {metrics['beta']:.2f}, {metrics['samples']} samples): "
                   f"agreement {train_m['accuracy']:.3f}, flip recall {train_m['flip_recall']:.3f}, "
                   f"p(teacher action) {train_m.get('teacher_prob', float('nan')):.3f}"
                   + (f", on the student's own states before refit {metrics['on_policy_before_fit']['accuracy']:.3f}"
                      if "on_policy_before_fit" in metrics else ""))

    return on_round


def _imitate(run: _Run, evaluator: HeldOutEvaluator | None) -> Path:
    """Behaviour cloning + DAgger from the teacher (``agents.imitation``); the clone is evaluated
    (when evaluation runs) and saved as ``checkpoints/clone``."""
    config, model, vecnorm = run.config, run.model, run.vecnorm
    t0 = time.time()
    label_envs = labelling_envs(config)
    if vecnorm is not None:
        vecnorm.training = False  # statistics come from the teacher's data inside pretrain()
    with _progress(run.progress, "imitation", config.pretrain.teacher_steps
                   + config.pretrain.dagger_rounds * config.pretrain.dagger_steps
                   + (config.pretrain.dagger_steps if config.pretrain.value_pretrain else 0)) as advance:
        pre_report, _data = pretrain(model, label_envs, config.pretrain, seed=config.seed,
                                     gamma=float(getattr(model, "gamma", 0.99)), normalizer=vecnorm,
                                     on_round=_imitation_round_logger(run.logger, run.on_message), progress=advance)
    for env in (label_envs if isinstance(label_envs, list) else [label_envs]):
        env.close()
    if vecnorm is not None:
        vecnorm.training = True
    run.report["pretrain"] = pre_report.to_dict()
    run.report["timings_s"]["pretrain"] = time.time() - t0
    if evaluator is not None:
        clone_eval = evaluator.evaluate(student_chooser(model, run.normalize))
        _log_summary(run.logger, "clone_eval", clone_eval)
        run.logger.dump(0)
        run.report["clone_eval"] = clone_eval.to_dict()
        run.on_message(f"clone on the evaluation episodes: attainment {clone_eval.mean('attainment'):.3f}, "
                       f"serving-rate scale {clone_eval.serving_rate:.3f}")
    return run.save(run.ckpt_dir / "clone", {"stage": "clone"})


def _reinforce(run: _Run, callback: ArrowEvalCallback | None) -> None:
    """The RL phase (skipped when imitation alone was asked for), evaluating through ``callback``;
    the starting policy (a clone or ``init_from``) is the first candidate for ``best``."""
    config, model = run.config, run.model
    n_rl = config.n_timesteps if (not config.pretrain.enabled or config.pretrain.rl_after) else 0
    if n_rl <= 0:
        if callback is not None:
            callback.init_callback(model)
            callback.evaluate_now()
        return
    t0 = time.time()
    if callback is not None and (config.pretrain.enabled or config.init_from is not None):
        callback.init_callback(model)
        callback.evaluate_now()
    callbacks: list[BaseCallback] = [c for c in (callback,) if c is not None]
    if config.checkpoint_every:
        callbacks.append(SnapshotCallback(config.checkpoint_every,
                                          lambda n: run.save(run.ckpt_dir / f"step_{n}", {"stage": f"step_{n}"})))
    planned = planned_timesteps(model, n_rl)
    if planned != n_rl:
        run.on_message(f"RL: {planned:,} steps ({n_rl:,} asked, rounded up to whole rollouts of "
                       f"{planned_unit(model):,} steps)")
    with _progress(run.progress, "RL", planned) as advance:
        callbacks.append(ProgressCallback(advance))
        model.learn(total_timesteps=n_rl, callback=CallbackList(callbacks), progress_bar=False,
                    reset_num_timesteps=True)
    run.report["timings_s"]["rl"] = time.time() - t0
    if callback is not None and (not callback.history or callback.history[-1]["timesteps"] != model.num_timesteps):
        callback.evaluate_now()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


class _progress:
    """A rich progress bar for the imitation phase (SB3 shows its own for RL). Written to a file or a
    pipe (a background run's log), where rich draws nothing until the end, it prints a plain line at
    every tenth of the total instead, so an hour of labelling is not silent."""

    def __init__(self, enabled: bool, label: str, total: int) -> None:
        self.enabled, self.label, self.total = enabled, label, total
        self._bar = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda _n: None
        if not sys.stdout.isatty():
            return self._lines()
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self._bar.start()
        task = self._task = self._bar.add_task(self.label, total=self.total)
        return lambda n: self._bar.advance(task, n)

    def _lines(self) -> Callable[[int], None]:
        step, start, done = max(1, self.total // 10), time.time(), [0]
        self._printed = 0

        def advance(n: int) -> None:
            before = done[0] // step
            done[0] += n
            if done[0] // step > before:
                self._print(done[0], start)

        self._done, self._start = done, start
        return advance

    def _print(self, done: int, start: float) -> None:
        print(f"{self.label}: {min(done, self.total):,}/{self.total:,} steps, {time.time() - start:.0f} s", flush=True)
        self._printed = done

    def __exit__(self, exc_type, *exc) -> None:
        if self.enabled and self._bar is None and exc_type is None and getattr(self, "_done", None):
            if self._done[0] != self._printed:   # the last step, when it fell between two tenths
                self._print(self._done[0], self._start)
        if self._bar is not None:
            if exc_type is None:   # the total counts the value head's own rollout, skipped when DAgger's is on-policy enough
                self._bar.update(self._task, completed=self.total)
            self._bar.stop()


def export_checkpoint(result: TrainResult, out: str | Path) -> Path:
    """Copy the selected checkpoint (``TrainResult.selected_dir``) to ``out`` (replacing it)."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(result.selected_dir, out)
    return out
