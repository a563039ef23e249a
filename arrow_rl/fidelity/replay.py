"""Rebuild one real stage's workload and run it through one emulated instance with the run's knobs.

The stage's sends are evenly spaced at its rate (inference-perf's constant load), prompt lengths are
drawn from the stage's measured prompt-length percentiles (inverse CDF, linear between the knots,
seeded), every output is the configured ``output_len`` (the runs use ``ignore_eos``), and request
``i`` carries prompt ``i mod (groups × users)``, as inference-perf sends them, so after its first use
a prompt is found in the instance's prefix cache (docs/fidelity.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from arrow_rl.fidelity.runs import RealRun, RealStage
from arrow_rl.workload.workload import Workload

if TYPE_CHECKING:
    from arrow_rl.perf.preset import Preset


@dataclass(frozen=True)
class SimStage:
    """The emulator's figures for one stage (means in seconds over the requests that finished)."""

    ttft_mean: float
    tpot_mean: float
    e2e_mean: float
    throughput_rps: float
    finished: int
    sent: int


def sample_prompt_lengths(stage: RealStage, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` prompt lengths from the stage's measured percentile table (inverse-CDF sampling)."""
    q = np.array([k for k, _ in stage.prompt_quantiles])
    v = np.array([t for _, t in stage.prompt_quantiles])
    return np.maximum(np.rint(np.interp(rng.random(n), q, v)), 1).astype(np.int64)


def stage_workload(run: RealRun, stage: RealStage, seed: int = 0, duration_s: float | None = None) -> Workload:
    """The stage as a replayable workload (``duration_s`` shortens it, e.g. for fitting).

    inference-perf's shared-prefix generator builds ``groups × users`` distinct prompts once (a group's
    system prompt, then a question) and sends request ``i`` with prompt ``i mod (groups × users)``; so
    after its first use every prompt is a whole-prompt hit in vLLM's prefix cache.
    """
    span = stage.duration_s if duration_s is None else min(duration_s, stage.duration_s)
    n = max(int(round(span * stage.rate)), 1)
    arrivals = np.arange(n, dtype=float) / stage.rate
    rng = np.random.default_rng(seed)
    sp = run.shared_prefix
    distinct = n if sp is None else sp.num_groups * sp.users_per_group
    lengths = sample_prompt_lengths(stage, distinct, rng)
    prompt_id = np.arange(n) % distinct
    prompts = lengths[prompt_id]
    outputs = np.full(n, stage.output_len, dtype=np.int64)
    wl = Workload(arrivals, prompts, outputs, name=f"{run.name}#stage{stage.index}")
    # A repeated prompt hits every full block but the one holding its last token: vLLM v1 always
    # computes at least the last prompt token to sample from it.
    return wl.with_shared_prefixes(prompt_id, prompts - 1)


def replay_stage(run: RealRun, stage: RealStage, preset: "str | Preset", seed: int = 0,
                 duration_s: float | None = None, timeout_s: float | None = None) -> SimStage:
    """Replay ``stage`` on one colocated instance of ``preset`` with the run's scheduler knobs.

    ``timeout_s`` is the client's time-out (inference-perf's failures): a request that has not
    finished by then counts as failed, as the real client counted it.
    """
    from arrow_rl.cluster.base import Mode
    from arrow_rl.cluster.emulator import EmulatedCluster, EmulatorConfig

    wl = stage_workload(run, stage, seed, duration_s)
    name = preset if isinstance(preset, str) else preset.name
    cfg = EmulatorConfig(preset=name, num_instances=1, mode=Mode.COLOCATED,
                         max_num_batched_tokens=run.max_num_batched_tokens,
                         max_num_seqs=min(run.max_num_seqs, run.max_num_batched_tokens),
                         client_timeout_s=timeout_s)
    if isinstance(preset, str):
        cluster = EmulatedCluster(wl, cfg, seed=seed)
    else:  # a candidate model (fitting): its Arrow profile is not cached (profile_instance would keep it)
        from arrow_rl.perf.profile import fit_instance_profile

        prof = fit_instance_profile(preset.latency, preset.max_model_len, max_batch_tokens=preset.kv_capacity_tokens)
        cluster = EmulatedCluster(wl, cfg, seed=seed, preset=preset, profile=prof)
    cluster.run_until_done()
    recs = [r for r in cluster.completed() if r.finished
            and (timeout_s is None or r.finish_s - r.arrival_s <= timeout_s)]
    ttft = np.array([r.ttft_s for r in recs])
    e2e = np.array([r.finish_s - r.arrival_s for r in recs])
    span = stage.duration_s if duration_s is None else min(duration_s, stage.duration_s)
    if not recs:
        return SimStage(math.nan, math.nan, math.nan, 0.0, 0, len(wl))
    return SimStage(ttft_mean=float(ttft.mean()),
                    tpot_mean=float(((e2e - ttft) / max(stage.output_len - 1, 1)).mean()),
                    e2e_mean=float(e2e.mean()), throughput_rps=len(recs) / span,
                    finished=len(recs), sent=len(wl))


__all__ = ["SimStage", "replay_stage", "sample_prompt_lengths", "stage_workload"]
