"""Disjoint train / held-out time ranges of the bundled traces (see ``HoldoutConfig``).

Why a time split rather than a whole held-out trace: the bundled traces differ in kind (short
chat prompts, bursty code completions, 15k-token Mooncake contexts) and in suitable SLOs, so
holding one out entirely tests transfer to a different workload class, while a later time range of
the same traces tests what a deployment sees: the same service, a future it has not trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.config import TrainConfig, config_from_dict
from agents.envs_bridge import deep_merge, env_config, is_toy


def split_point(arrival_first: float, arrival_last: float, fraction: float) -> float:
    """Cut time: the held-out range is the last ``fraction`` of the span."""
    return arrival_first + (1.0 - fraction) * (arrival_last - arrival_first)


def split_trace(name: str, fraction: float, out_dir: Path) -> dict[str, Any]:
    """Write ``<stem>-train.csv`` (arrivals before the cut) and ``<stem>-heldout.csv`` (after it,
    re-based to 0) for one trace; returns paths and the cut time (trace seconds)."""
    from arrow_rl.workload.loaders import load_workload

    wl = load_workload(name)
    if len(wl) < 2:
        raise ValueError(f"holdout: trace {name!r} has {len(wl)} requests, too few to split")
    cut = split_point(float(wl.arrival_s[0]), float(wl.arrival_s[-1]), fraction)
    stem = Path(name).stem if ("/" in name or name.endswith((".csv", ".jsonl"))) else name
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path, held_path = out_dir / f"{stem}-train.csv", out_dir / f"{stem}-heldout.csv"
    train, held = wl.window(float(wl.arrival_s[0]), cut), wl.window(cut, float(wl.arrival_s[-1]) + 1e-6)
    if len(train) == 0 or len(held) == 0:
        raise ValueError(f"holdout: fraction {fraction} leaves an empty part of trace {name!r}")
    train.to_csv(train_path)
    held.to_csv(held_path)
    return {"trace": name, "cut_s": cut, "train": str(train_path), "heldout": str(held_path),
            "train_requests": len(train), "heldout_requests": len(held)}


def apply_holdout(config: TrainConfig, out_dir: Path) -> tuple[TrainConfig, list[dict[str, Any]]]:
    """The config with training episodes restricted to the early part of each trace and held-out
    evaluation episodes to the late part; unchanged when ``holdout.fraction`` is 0."""
    fraction = config.holdout.fraction
    if fraction <= 0:
        return config, []
    if is_toy(config.env.id):
        raise ValueError("holdout: the toy env has no traces to split")
    resolved = env_config(config.env.id, config.env.env_kwargs())
    if resolved.episode.generator is not None:
        raise ValueError("holdout: env.episode uses a synthetic generator; a time split needs traces")
    splits = [split_trace(name, fraction, out_dir) for name in resolved.episode.traces]
    raw = config.to_dict()
    raw["env"] = deep_merge(raw["env"], {"episode": {"traces": [s["train"] for s in splits]}})
    eval_env = raw["eval"].get("env") or {}
    if "traces" not in (eval_env.get("episode") or {}):
        part = "heldout" if config.holdout.eval_on == "heldout" else "train"
        raw["eval"]["env"] = deep_merge(eval_env, {"episode": {"traces": [s[part] for s in splits]}})
    return config_from_dict(raw, source="holdout"), splits
