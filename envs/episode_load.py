"""An episode's load: its workload at the episode's rate factor, after its warm-up.

The suite measures every controller on loads built by ``arrow_rl.evaluation.protocol``: a warm-up
served but not counted, then the counted span, the rate raised by superposing copies of the trace
at its own time scale. ``episode.load_mode: superpose`` builds the env's episodes with that same
machinery (``build_load``, ``with_warmup``, ``spec_at_rate_factor``), so a policy trains on the
kind of load it is scored on; ``compress`` keeps Arrow §6.1's timestamp division.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from arrow_rl.evaluation.protocol import LoadSource, Protocol, build_load, spec_at_rate_factor, with_warmup
from arrow_rl.workload.generators import generate
from arrow_rl.workload.workload import Workload


@dataclass(frozen=True)
class EpisodeLoad:
    """What an episode serves: requests arriving before ``count_from_s`` are the warm-up; the
    counted arrival window ends at ``arrival_end_s``."""

    workload: Workload
    count_from_s: float
    arrival_end_s: float
    desc: dict[str, Any] = field(default_factory=dict)


def after_warmup(workload: Workload, arrival_end_s: float, warmup_s: float, desc: dict[str, Any]) -> EpisodeLoad:
    """``workload`` (arrivals ending at ``arrival_end_s``) preceded by its own first ``warmup_s``
    seconds, looped if shorter (``protocol.with_warmup``: the suite's warm-up of a non-trace load)."""
    if warmup_s <= 0 or len(workload) == 0:
        return EpisodeLoad(workload, 0.0, arrival_end_s, desc)
    t0 = float(workload.arrival_s[0])
    loaded, count_from = with_warmup(workload, warmup_s)   # time 0 = the warm-up's first arrival
    return EpisodeLoad(loaded, count_from, count_from + arrival_end_s - t0, desc)


def superposed_trace(trace: Workload, name: str, factor: float, seed: int, duration_s: float,
                     warmup_s: float) -> EpisodeLoad:
    """The suite's load of ``trace`` at ``factor``: ``ceil(factor)`` windows of ``warmup_s + duration_s``
    at seeded offsets of the trace looped end to end, the last one thinned (independent growth)."""
    protocol = Protocol(rate_mode="superpose", warmup_s=warmup_s, span_s=duration_s, seeds=(seed,))
    load = build_load(LoadSource(name, trace=trace), factor, seed, protocol)
    return EpisodeLoad(load.workload, load.count_from_s, load.count_from_s + duration_s,
                       {"source": name, "load_mode": "superpose", "rate_scale": factor, "load_seed": seed})


def superposed_generator(spec: Any, factor: float | None, seed: int, warmup_s: float) -> EpisodeLoad:
    """Generator ``spec`` at ``factor`` times its rates, its time structure unchanged (a Poisson-based
    process at k times the rate is k superposed copies of it), after its own first ``warmup_s``."""
    scaled = spec if factor is None else spec_at_rate_factor(spec, factor)
    desc: dict[str, Any] = {"source": f"generator:{spec.kind}", "seed": seed, "load_mode": "superpose"}
    if factor is not None:
        desc["rate_scale"] = factor
    return after_warmup(generate(scaled, seed), float(spec.horizon_s), warmup_s, desc)
