"""Hyperparameter search over a training config with Ray Tune (``arrow-rl tune``).

The search space lives in the training config itself, in a ``tune:`` section (``arrow-rl train``
ignores it)::

    tune:
      suite: standard                  # whose split: train scenarios score each trial
      scenarios: [azure-conv-70b-x8]   # default: every train scenario; a test scenario is refused
      quick: true                      # the suite's quick protocol
      num_samples: 8                   # trials
      seed: 0                          # the search's own seed (which points are sampled)
      space:                           # dotted config path -> one distribution
        learning_rate: {loguniform: [1.0e-4, 1.0e-3]}
        ent_coef: {uniform: [0.0, 0.02]}
        policy_kwargs.net_arch: {choice: [[16, 16], [64, 64]]}

Each trial trains the config with the sampled values (``agents.train.train``, the config's own
seed, so trials differ only by their values) and scores the selected checkpoint by its serving
rate on the chosen train scenarios: the geometric mean over scenarios of the mean over the
suite's seeds (``arrow_rl.evaluation.seeded_search.search_controller``, the suite's protocol).
Held-out (``split: test``) scenarios are never an objective: nothing may be tuned on them
(docs/evaluation.md). The best trial's config, without the ``tune:`` section, is written as YAML.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agents.config import ConfigError, TrainConfig, config_from_dict
from arrow_rl.config_io import ConfigFileError, format_validation_error, read_config_mapping

OBJECTIVE = "serving_rate"


class Choice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    choice: list[Any] = Field(min_length=1)


class Uniform(BaseModel):
    model_config = ConfigDict(extra="forbid")
    uniform: tuple[float, float]

    @field_validator("uniform")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (math.isfinite(v[0]) and math.isfinite(v[1]) and v[0] < v[1]):
            raise ValueError(f"uniform needs finite [low, high] with low < high, got {list(v)}")
        return v


class LogUniform(BaseModel):
    model_config = ConfigDict(extra="forbid")
    loguniform: tuple[float, float]

    @field_validator("loguniform")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] < v[1] and math.isfinite(v[1])):
            raise ValueError(f"loguniform needs [low, high] with 0 < low < high, got {list(v)}")
        return v


Distribution = Union[Choice, Uniform, LogUniform]


class TuneSpec(BaseModel):
    """The ``tune:`` section of a training config."""

    model_config = ConfigDict(extra="forbid")
    suite: str = "standard"
    scenarios: list[str] | None = Field(None, min_length=1)
    quick: bool = True
    objective: Literal["serving_rate"] = OBJECTIVE
    num_samples: int = Field(8, ge=1)
    seed: int = 0
    cpus_per_trial: float = Field(1.0, gt=0)
    space: dict[str, Distribution] = Field(min_length=1)

    def sampled_values(self) -> dict[str, list[Any]]:
        """Values that bound each dimension (every choice, both ends of a range): checked up front."""
        out: dict[str, list[Any]] = {}
        for path, d in self.space.items():
            out[path] = list(d.choice) if isinstance(d, Choice) else list(getattr(d, "uniform", None)
                                                                            or d.loguniform)
        return out


@dataclass
class TuneJob:
    """A validated search: the base config (no ``tune:`` section), the spec, the scenarios."""

    source: str
    base: dict[str, Any]
    spec: TuneSpec
    suite_path: Path
    scenarios: list[str]


def set_path(config: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``config`` with the dotted ``path`` set (intermediate mappings created)."""
    out = copy.deepcopy(config)
    node = out
    keys = path.split(".")
    for k in keys[:-1]:
        if not isinstance(node.get(k, {}), dict):
            raise ConfigError(f"tune.space.{path}: {k!r} is not a mapping in the config")
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return out


def apply_params(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    out = base
    for path, value in params.items():
        out = set_path(out, path, value)
    return out


def load_tune_job(path: str | Path) -> TuneJob:
    """Read a training config with a ``tune:`` section; every error names the file and the field.
    Refuses a ``split: test`` scenario as an objective, and any space value that makes the
    training config invalid (checked for every choice and both ends of every range)."""
    from arrow_rl.evaluation.suite_spec import SuiteError, read_suite_spec, resolve_suite_path

    try:
        raw = read_config_mapping(path, "training config")
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from None
    section = raw.pop("tune", None)
    if section is None:
        raise ConfigError(f"{path}: no tune: section (the search space; see docs/scaling.md)")
    try:
        spec = TuneSpec.model_validate(section)
    except ValidationError as exc:
        raise ConfigError(f"{path}: tune: {format_validation_error(exc)}") from None
    config_from_dict(raw, source=str(path))  # the base config itself is valid
    for p, values in spec.sampled_values().items():
        for v in values:
            try:
                config_from_dict(set_path(raw, p, v), source=str(path))
            except ConfigError as exc:
                raise ConfigError(f"{path}: tune.space.{p} = {v!r} makes the config invalid: "
                                  f"{' '.join(str(exc).split())}") from None
    suite_ref = spec.suite
    beside = Path(path).parent / spec.suite  # a suite file named relative to the config
    if spec.suite.endswith((".yaml", ".yml")) and not Path(spec.suite).exists() and beside.is_file():
        suite_ref = str(beside)
    try:
        suite_path = resolve_suite_path(suite_ref).resolve()
        suite = read_suite_spec(suite_path)
    except SuiteError as exc:
        raise ConfigError(f"{path}: tune.suite: {exc}") from None
    split = {s.name: s.split for s in suite.scenarios}
    names = spec.scenarios or [n for n, sp in split.items() if sp == "train"]
    for n in names:
        if n not in split:
            raise ConfigError(f"{path}: tune.scenarios: {n!r} is not a scenario of suite {suite.name} "
                              f"({', '.join(split)})")
        if split[n] != "train":
            raise ConfigError(f"{path}: tune.scenarios: {n!r} is a split: test scenario of suite {suite.name}; "
                              "held-out scenarios are never tuned on (use its train scenarios)")
    if not names:
        raise ConfigError(f"{path}: tune: suite {suite.name} has no split: train scenario to score trials on")
    return TuneJob(str(path), raw, spec, suite_path, names)


def _ray_space(spec: TuneSpec) -> dict[str, Any]:
    from ray import tune

    out: dict[str, Any] = {}
    for p, d in spec.space.items():
        if isinstance(d, Choice):
            out[p] = tune.choice(d.choice)
        elif isinstance(d, Uniform):
            out[p] = tune.uniform(*d.uniform)
        else:
            out[p] = tune.loguniform(*d.loguniform)
    return out


def score_checkpoint(checkpoint: str, suite_path: Path, scenarios: list[str], quick: bool) -> dict[str, float]:
    """Serving rate (req/s, mean over the suite's seeds) of a checkpoint on each named scenario."""
    from arrow_rl.evaluation.seeded_search import search_controller
    from arrow_rl.evaluation.suite_spec import load_suite

    suite = load_suite(str(suite_path), quick=quick)
    by_name = {s.name: s for s in suite.scenarios}
    out: dict[str, float] = {}
    for n in scenarios:
        sc = by_name[n]
        assert sc.split == "train", n  # load_tune_job refused it already; never score on held-out data
        seeds = search_controller(sc.source, sc.emulator_config, checkpoint, sc.protocol)
        out[n] = sum(s.rate for s in seeds) / len(seeds)
    return out


def geomean(values: list[float]) -> float:
    if not values or any(v <= 0 for v in values):
        return 0.0
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _trial(params: dict[str, Any], job: TuneJob, run_root: str) -> None:
    """One Tune trial (a Ray worker): train with ``params``, score on the train scenarios."""
    from ray import tune

    from agents.train import train

    config: TrainConfig = config_from_dict(apply_params(job.base, params), source=job.source)
    # one directory per trial: concurrent trials share the config's name and seed, so run names collide
    result = train(config, run_root=Path(run_root) / tune.get_context().get_trial_id(), progress=False)
    rates = score_checkpoint(str(result.selected_dir), job.suite_path, job.scenarios, job.spec.quick)
    tune.report({OBJECTIVE: geomean(list(rates.values())), "per_scenario": rates,
                 "checkpoint": str(result.selected_dir)})


@dataclass
class TuneResult:
    best_params: dict[str, Any]
    best_score: float
    best_config: dict[str, Any]
    best_checkpoint: str
    trials: list[dict[str, Any]]


def run_tune(job: TuneJob, out_dir: str | Path, *, address: str | None = None,
             num_samples: int | None = None) -> TuneResult:
    """Run the search on Ray (``address``: a cluster, or None for a private local Ray); trials'
    runs and Tune's records go under ``out_dir``."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from arrow_rl.evaluation.ray_backend import ray_session

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    trainable = tune.with_resources(tune.with_parameters(_trial, job=job, run_root=str(out_dir / "runs")),
                                    {"cpu": job.spec.cpus_per_trial})
    with ray_session(address):
        tuner = tune.Tuner(
            trainable, param_space=_ray_space(job.spec),
            tune_config=tune.TuneConfig(metric=OBJECTIVE, mode="max", num_samples=num_samples or job.spec.num_samples,
                                        search_alg=BasicVariantGenerator(random_state=job.spec.seed)),
            run_config=tune.RunConfig(name="tune", storage_path=str(out_dir / "ray_results"), verbose=0))
        grid = tuner.fit()
    trials = []
    for r in grid:
        if r.error is not None:
            raise ValueError(f"a trial failed: {type(r.error).__name__}: {' '.join(str(r.error).split())[:500]}")
        trials.append({"params": _plain({k: r.config[k] for k in job.spec.space}),
                       OBJECTIVE: r.metrics[OBJECTIVE], "per_scenario": r.metrics["per_scenario"],
                       "checkpoint": r.metrics["checkpoint"]})
    trials.sort(key=lambda t: -t[OBJECTIVE])
    best = trials[0]
    return TuneResult(best["params"], best[OBJECTIVE], apply_params(job.base, best["params"]), best["checkpoint"],
                      trials)


def _plain(obj: Any) -> Any:
    """numpy scalars from Tune's samplers as plain Python (YAML/JSON-friendly)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj.item() if hasattr(obj, "item") else obj


def write_best(result: TuneResult, job: TuneJob, path: str | Path) -> Path:
    """The best trial's training config as YAML (no ``tune:`` section), with where it came from."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Best of {len(result.trials)} trials of `arrow-rl tune --config {job.source}`: "
              f"{OBJECTIVE} {result.best_score:.4g} req/s (geometric mean over {', '.join(job.scenarios)};\n"
              f"# suite {job.suite_path.name}, split: train only{', quick protocol' if job.spec.quick else ''}).\n"
              f"# Tuned values: {json.dumps(result.best_params)}\n")
    path.write_text(header + yaml.safe_dump(result.best_config, sort_keys=False), encoding="utf-8")
    return path
