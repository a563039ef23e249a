"""The checkpoint format: a directory that a deployed controller can be rebuilt from.

::

    <checkpoint>/
      model.zip          SB3 model (a zip holding pickled objects: load only checkpoints you trust)
      vecnormalize.pkl   VecNormalize statistics, only if training normalized observations (a pickle)
      metadata.json      observation/action space spec, observation feature names, env config,
                         preset, SLOs, training config, seed, package versions, training report

SECURITY: ``model.zip`` and ``vecnormalize.pkl`` are unpickled on load, and unpickling can run
arbitrary code. Load only checkpoints you created or trust.

``metadata.json`` is plain JSON and is read and validated *before* anything is unpickled, so a
checkpoint that does not fit the cluster is rejected with a message naming the mismatch without
touching the pickles.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import pickle
import platform
from dataclasses import dataclass
from importlib import metadata as _md
from pathlib import Path
from typing import Any

import numpy as np

from arrow_rl.control import ControllerMismatch
from agents.config import algo_class
from agents.inference import action_scores, greedy_actions

FORMAT = "arrow-rl-checkpoint"
FORMAT_VERSION = 1
MODEL_FILE = "model.zip"
VECNORM_FILE = "vecnormalize.pkl"
METADATA_FILE = "metadata.json"

# Said where a plain SB3 model is given for a checkpoint: what turns one into the other.
EXPORT_HINT = ("an SB3 model from your own script becomes a checkpoint with "
               "`arrow-rl checkpoint export MODEL.zip --out DIR` (docs/agents.md, \"Bring your own agent\")")

_PACKAGES = ("arrow-rl", "torch", "stable-baselines3", "sb3-contrib", "gymnasium", "numpy")


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete or malformed."""


class CheckpointMismatchError(CheckpointError, ControllerMismatch):
    """A checkpoint does not fit the cluster / environment it is asked to control."""


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = _md.version(name)
        except _md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def space_spec(space) -> dict[str, Any]:
    """JSON description of a gymnasium space (Box or Discrete), enough to check compatibility."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n)}
    if isinstance(space, spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype)}
    raise CheckpointError(f"unsupported space {space!r}: checkpoints support Box observations and Discrete actions")


def save_checkpoint(
    directory: str | Path,
    model,
    metadata: dict[str, Any],
    vecnormalize=None,
) -> Path:
    """Write ``model.zip`` (+ ``vecnormalize.pkl``) and ``metadata.json`` into ``directory``.

    ``metadata`` holds the caller's fields (env config, feature names, training config...); the
    format header, spaces and package versions are filled in here from the model itself.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / MODEL_FILE)
    if vecnormalize is not None:
        vecnormalize.save(str(directory / VECNORM_FILE))
    elif (directory / VECNORM_FILE).exists():
        (directory / VECNORM_FILE).unlink()
    meta = dict(metadata)
    meta.update(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "algo": meta.get("algo") or _algo_name(model),
            "observation_space": space_spec(model.observation_space),
            "action_space": space_spec(model.action_space),
            "normalized": vecnormalize is not None,
            "versions": package_versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
    )
    (directory / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=_json_default) + "\n")
    return directory


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "value"):  # enums
        return obj.value
    return repr(obj)


def _algo_name(model) -> str:
    name = type(model).__name__
    return {"PPO": "ppo", "MaskablePPO": "maskable_ppo", "DQN": "dqn"}.get(name, name.lower())


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """Read and check ``metadata.json`` (no unpickling)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a checkpoint directory (expected {MODEL_FILE} + {METADATA_FILE})"
                              + (f"; {EXPORT_HINT}" if directory.is_file() else ""))
    path = directory / METADATA_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; a checkpoint directory needs {METADATA_FILE} beside {MODEL_FILE}; "
                              f"{EXPORT_HINT}") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not a text file (expected JSON)") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an arrow-rl checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {meta.get('format_version')!r} is not supported (this arrow-rl reads {FORMAT_VERSION})"
        )
    for key in ("algo", "observation_space", "action_space"):
        if key not in meta:
            raise CheckpointError(f"{path}: missing field {key!r}")
    _check_space_field(path, "observation_space", meta["observation_space"], "Box")
    _check_space_field(path, "action_space", meta["action_space"], "Discrete")
    if not (directory / MODEL_FILE).is_file():
        raise CheckpointError(f"{directory / MODEL_FILE}: missing")
    if meta.get("normalized") and not (directory / VECNORM_FILE).is_file():
        raise CheckpointError(f"{directory / VECNORM_FILE}: missing, but metadata says observations were normalized")
    return meta


def _check_space_field(path: Path, key: str, spec: Any, kind: str) -> None:
    """The JSON written by ``space_spec``: ``{type: Box, shape: [n...]}`` or ``{type: Discrete, n: k}``."""
    ok = isinstance(spec, dict) and spec.get("type") == kind
    if ok and kind == "Box":
        shape = spec.get("shape")
        ok = isinstance(shape, list) and len(shape) >= 1 and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
    if ok and kind == "Discrete":
        n = spec.get("n")
        ok = isinstance(n, int) and not isinstance(n, bool) and n >= 1
    if not ok:
        want = '{"type": "Box", "shape": [n]}' if kind == "Box" else '{"type": "Discrete", "n": k}'
        raise CheckpointError(f"{path}: field {key!r} must be {want}, got {json.dumps(spec)[:120]}")


def check_spaces(meta: dict[str, Any], observation_space, action_space, source: str = "checkpoint") -> None:
    """Raise ``CheckpointMismatchError`` naming every difference between the checkpoint's spaces
    and the ones of the environment/cluster it should control."""
    problems = []
    want_obs, want_act = space_spec(observation_space), space_spec(action_space)
    have_obs, have_act = meta["observation_space"], meta["action_space"]
    if have_obs.get("shape") != want_obs.get("shape"):
        problems.append(f"observation size {_size(have_obs)} (checkpoint) vs {_size(want_obs)} (environment)")
    if have_act.get("type") != want_act.get("type") or have_act.get("n") != want_act.get("n"):
        problems.append(f"action space {_act(have_act)} (checkpoint) vs {_act(want_act)} (environment)")
    if problems:
        raise CheckpointMismatchError(f"{source} does not fit this environment: " + "; ".join(problems))


# SLOs within this ratio of the training SLOs count as the same tier (the loads the policy reads
# are SLO-relative, so a small change shifts them little; a tier change shifts them a lot).
SLO_TOLERANCE = 1.25


def training_distribution(meta: dict[str, Any]) -> dict[str, Any]:
    """What the checkpoint was trained on: preset, cluster sizes, SLOs, traces, rate scales.

    New checkpoints store it as ``training_distribution``; for older ones (the shipped default
    included) it is rebuilt from the env config in the metadata."""
    if isinstance(meta.get("training_distribution"), dict):
        return meta["training_distribution"]
    env = meta.get("env_config") if isinstance(meta.get("env_config"), dict) else {}
    episode = env.get("episode") if isinstance(env.get("episode"), dict) else {}
    sizes = episode.get("num_instances") or ([meta.get("num_instances")] if meta.get("num_instances") else [])
    slo = meta.get("slo") if isinstance(meta.get("slo"), dict) else {}
    return {"preset": meta.get("preset") or env.get("preset"), "cluster_sizes": list(sizes),
            "slo_ttft_s": slo.get("ttft_s", env.get("slo_ttft_s")), "slo_tpot_s": slo.get("tpot_s", env.get("slo_tpot_s")),
            "traces": episode.get("traces"), "rate_scale": episode.get("rate_scale")}


def distribution_warnings(meta: dict[str, Any], *, preset: str | None = None, num_instances: int | None = None,
                          slo_ttft_s: float | None = None, slo_tpot_s: float | None = None,
                          source: str = "checkpoint") -> list[str]:
    """One sentence per way the target lies outside the training distribution (empty: inside).

    A checkpoint outside its distribution still loads (the spaces fit), but its decisions were
    never trained for that cluster: say so before it runs, rather than let a demo silently differ.
    """
    dist = training_distribution(meta)
    out = []
    presets = [p for p in (dist.get("presets") or [dist.get("preset")]) if isinstance(p, str) and p]
    if preset is not None and presets and preset not in presets:
        out.append(f"{source} was trained on preset{'s' if len(presets) > 1 else ''} "
                   f"{', '.join(repr(p) for p in presets)}, not {preset!r}")
    sizes = [int(n) for n in dist.get("cluster_sizes") or [] if isinstance(n, (int, float))]
    if num_instances is not None and sizes and num_instances not in sizes:
        span = dist.get("num_instances_range")
        what = (f"{span[0]} to {span[1]}" if isinstance(span, list) and len(span) == 2 else '/'.join(map(str, sizes)))
        out.append(f"{source} was trained on clusters of {what} instances, not {num_instances}")
    tiers = dist.get("slo_tiers")
    if isinstance(tiers, dict) and tiers:   # several tiers: the target must be near one of them
        if slo_ttft_s is not None and slo_tpot_s is not None and slo_ttft_s > 0 and slo_tpot_s > 0:
            def near(t: Any) -> bool:
                return isinstance(t, dict) and all(
                    isinstance(t.get(k), (int, float)) and t[k] > 0 and max(v / t[k], t[k] / v) <= SLO_TOLERANCE
                    for k, v in (("ttft_s", slo_ttft_s), ("tpot_s", slo_tpot_s)))
            if not any(near(t) for t in tiers.values()):
                names = ", ".join(f"{k} (TTFT {t.get('ttft_s'):g} s / TPOT {t.get('tpot_s'):g} s)"
                                  for k, t in sorted(tiers.items()) if isinstance(t, dict))
                out.append(f"{source} was trained for the SLO tiers {names}, not TTFT {slo_ttft_s:g} s / "
                           f"TPOT {slo_tpot_s:g} s")
        return out
    for name, have, want in (("TTFT", slo_ttft_s, dist.get("slo_ttft_s")), ("TPOT", slo_tpot_s, dist.get("slo_tpot_s"))):
        if have is not None and isinstance(want, (int, float)) and want > 0 and have > 0:
            if max(have / want, want / have) > SLO_TOLERANCE:
                out.append(f"{source} was trained for a {name} SLO of {want:g} s, not {have:g} s")
    return out


def _size(spec: dict[str, Any]) -> str:
    shape = spec.get("shape") or []
    return str(int(np.prod(shape))) if len(shape) == 1 else str(tuple(shape))


def _act(spec: dict[str, Any]) -> str:
    return f"{spec.get('type')}({spec.get('n')})" if spec.get("type") == "Discrete" else str(spec.get("type"))


@dataclass
class ObsNormalizer:
    """The frozen observation scaling of ``VecNormalize``: clip((x - mean) / sqrt(var + eps))."""

    mean: np.ndarray
    var: np.ndarray
    clip: float
    epsilon: float

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.clip((obs - self.mean) / np.sqrt(self.var + self.epsilon), -self.clip, self.clip).astype(np.float32)

    @classmethod
    def from_vecnormalize(cls, vn) -> "ObsNormalizer | None":
        if not getattr(vn, "norm_obs", False):
            return None
        return cls(
            np.asarray(vn.obs_rms.mean, np.float64).copy(),
            np.asarray(vn.obs_rms.var, np.float64).copy(),
            float(vn.clip_obs),
            float(vn.epsilon),
        )


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model, its frozen observation scaling, and its metadata."""

    directory: Path
    model: Any
    metadata: dict[str, Any]
    normalizer: ObsNormalizer | None = None

    @property
    def n_actions(self) -> int:
        return int(self.metadata["action_space"]["n"])

    @property
    def obs_size(self) -> int:
        return int(np.prod(self.metadata["observation_space"]["shape"]))

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, np.float32)
        return self.normalizer(obs) if self.normalizer is not None else obs

    def act(self, obs: np.ndarray, mask: np.ndarray | None = None) -> int:
        """Deterministic masked action for one raw observation."""
        return int(greedy_actions(self.model, self.normalize(obs)[None], None if mask is None else np.asarray(mask)[None])[0])

    def scores(self, obs: np.ndarray) -> np.ndarray:
        """The network's per-action scores (logits or Q-values) for one raw observation."""
        return action_scores(self.model, self.normalize(obs)[None])[0]

    @property
    def move_margin(self) -> float:
        """``metadata.json`` ``inference.move_margin``: how much a move must beat the no-op by at
        deploy time (``agents.inference.hold_unless_confident``); 0 when absent."""
        return move_margin_of(self.metadata, self.directory / "metadata.json")


def move_margin_of(meta: dict[str, Any], source: Path | str) -> float:
    """The validated ``inference.move_margin`` of checkpoint metadata (0.0 when absent)."""
    inference = meta.get("inference") or {}
    if not isinstance(inference, dict):
        raise CheckpointError(f"{source}: field 'inference' must be a mapping, got {inference!r}")
    value = inference.get("move_margin", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise CheckpointError(f"{source}: field 'inference.move_margin' must be a finite number >= 0, got {value!r}")
    return float(value)


def _load_normalizer(path: Path, observation_space) -> ObsNormalizer | None:
    """The frozen scaling from ``vecnormalize.pkl``; a damaged or mismatched file names itself."""
    try:
        with open(path, "rb") as fh:
            vn = pickle.load(fh)
        normalizer = ObsNormalizer.from_vecnormalize(vn)
    except Exception as exc:  # noqa: BLE001 - unpickling damaged data raises nearly any type
        raise CheckpointError(f"{path}: cannot load the VecNormalize statistics ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:200]})") from None
    if normalizer is not None and normalizer.mean.shape != tuple(observation_space.shape):
        raise CheckpointError(f"{path}: statistics for observations of shape {normalizer.mean.shape}, "
                              f"the model takes {tuple(observation_space.shape)}")
    return normalizer


def load_checkpoint(directory: str | Path, device: str = "cpu") -> Checkpoint:
    """Load a checkpoint directory. SECURITY: unpickles ``model.zip`` (and ``vecnormalize.pkl``);
    only load checkpoints you trust."""
    directory = Path(directory)
    meta = read_metadata(directory)
    move_margin_of(meta, directory / "metadata.json")   # a bad value fails before anything is unpickled
    cls = algo_class(meta["algo"])
    try:
        model = cls.load(directory / MODEL_FILE, device=device)
    except Exception as exc:  # SB3 raises many kinds of errors for damaged zips
        raise CheckpointError(f"{directory / MODEL_FILE}: cannot load {meta['algo']} model ({type(exc).__name__}: {exc})") from exc
    check_spaces(meta, model.observation_space, model.action_space, source=f"{directory / MODEL_FILE}")
    normalizer = None
    if meta.get("normalized"):
        normalizer = _load_normalizer(directory / VECNORM_FILE, model.observation_space)
    model.policy.set_training_mode(False)
    return Checkpoint(directory, model, meta, normalizer)


def inspect_checkpoint(path: str, *, preset: str | None = None, num_instances: int | None = None,
                       slo_ttft_s: float | None = None, slo_tpot_s: float | None = None,
                       live: bool = False) -> list[str]:
    """Warnings about running checkpoint ``path`` outside its training distribution (no unpickling).

    Registered as the core's ``arrow_rl.checkpoint_inspectors`` entry point, so ``evaluate`` and
    ``deploy`` can warn without the core importing this package. With ``live``, also says that the
    emulated preset it was trained on is not the live cluster, and reports the action encoding's
    minimum pool size as a ``min_pool_size=N`` line (deploy uses it to tell when no flip is legal).
    """
    try:
        meta = read_metadata(Path(path))
    except CheckpointError:
        return []  # loading it reports the problem
    lines = distribution_warnings(meta, preset=preset, num_instances=num_instances, slo_ttft_s=slo_ttft_s,
                                  slo_tpot_s=slo_tpot_s, source=str(path))
    what = "its decisions on this cluster are" if live else "its results here are"
    out = [f"{line}; {what} outside what it was trained for" for line in lines]
    if live:
        trained = training_distribution(meta).get("preset")
        if trained:
            out.append(f"{path} was trained on the emulated preset {trained!r}; the live instances' latency "
                       "profile differs (run arrow-rl live-profile and compare)")
        out.append(f"min_pool_size={int((meta.get('action_encoding') or {}).get('min_pool_size', 1))}")
    return out
