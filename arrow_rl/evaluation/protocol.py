"""The measurement protocol: how one scenario's load is built at a given rate and seed.

Two ways to raise a workload's request rate by a factor ``k`` (``rate_mode``):

* ``scale`` - divide every timestamp by ``k`` (Arrow §6.1). Faithful to the paper, but it squashes
  time: a 3,436 s trace served at 50x lasts 69 s, so start-up transients and minute-scale phases
  are compressed into seconds.
* ``superpose`` - keep the trace's own time scale and overlay ``k`` copies. For a trace, how the
  copies relate is the scenario's ``growth``:

  - ``independent`` (more independent users: bursts and phases average out): ``ceil(k)`` windows
    taken at seeded random offsets of the trace looped end to end;
  - ``aligned`` (correlated demand: phases and bursts stay where the trace has them): ``ceil(k)``
    copies of the *same* window, each request's arrival jittered by a seeded uniform offset in
    [-``jitter_s``/2, ``jitter_s``/2] and each copy's prefix block ids made distinct, so copies
    never hit each other's prefix cache.

  In both the last copy is thinned to the fractional part of ``k`` by a fixed per-request uniform
  mark, so raising ``k`` only adds requests. For a generator the load is drawn once at the
  ceiling factor and every lower factor is derived from that draw (``nested_generator_load``): a
  Poisson-based process (poisson, mmpp, stages, phase_shift) is thinned by a fixed per-request mark
  (keep iff mark < k / ceiling), which is again the same process at ``k`` times the rate, phases and
  stage lengths unchanged; a ``gamma`` renewal process is time-compressed instead (its first
  requests, arrival times multiplied by ceiling / k), since thinning a renewal process makes it less
  bursty while compressing it keeps its interarrival CV. Either way a request present at factor
  ``a`` is present at every factor above ``a`` (nested loads), and every controller on a (scenario,
  seed) sees the same requests at the same factor (common random numbers). Stages or phases with a
  ``cv`` other than 1 are thinned too and so lose some burstiness at low factors.

Every load starts with a *warm-up* of ``warmup_s`` simulated seconds at the measured rate: served
(the cluster fills, the controller reacts) but not counted. For trace windows the warm-up is the
``warmup_s`` of trace before the counted window; otherwise it is the load's own first ``warmup_s``
replayed in front of it. The default, ``DEFAULT_WARMUP_S`` = 120 s, is long enough for Arrow to
walk from 4P:4D to 7P:1D one flip per trigger (10 s cooldown, §5.5) several times over.

Seeds pick the windows/offsets (traces) or the generator's random streams, and seed the emulator;
seed 0 of a trace in ``scale`` mode is the trace as published, other seeds rotate it cyclically by
a seeded offset. Same (source, k, seed, protocol) -> identical load.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np

from arrow_rl.workload.generators import GammaSpec, MMPPSpec, PhaseShiftSpec, PoissonSpec, StagesSpec, generate
from arrow_rl.workload.workload import Workload

RateMode = Literal["scale", "superpose"]
RATE_MODES: tuple[str, ...] = ("scale", "superpose")
Growth = Literal["independent", "aligned"]
GROWTHS: tuple[str, ...] = ("independent", "aligned")
DEFAULT_WARMUP_S = 120.0
DEFAULT_SPAN_S = 600.0
# A counted span shorter than this is flagged in every report (issue: "under 10 simulated minutes").
MIN_TRUSTED_SPAN_S = 600.0

GeneratorSpecT = Union[PoissonSpec, GammaSpec, MMPPSpec, StagesSpec, PhaseShiftSpec]


@dataclass(frozen=True)
class Protocol:
    """How every measurement of a suite is taken (stated in every report)."""

    rate_mode: RateMode = "superpose"
    warmup_s: float = DEFAULT_WARMUP_S
    span_s: float = DEFAULT_SPAN_S     # counted span of a trace in superpose mode (generators: their horizon)
    seeds: tuple[int, ...] = tuple(range(10))
    rel_tol: float = 0.02              # the crossing's bracket is refined until hi/lo <= 1 + rel_tol
    max_evals: int = 16                # simulations per (controller, seed) search, bound
    ceiling_factor: float = 64.0       # highest rate factor searched; a rate there is "≥ ceiling"
    control_interval_s: float = 1.0
    growth: Growth = "independent"     # how a trace's copies relate (module docstring)
    jitter_s: float = 10.0             # aligned growth: each copied arrival moves by U(-jitter/2, jitter/2)
    # Runs stop once their attainment surely ends below target - stop_margin: pass/fail is unchanged,
    # and a failing run within the margin plays to the end, so the attainments that bracket the
    # crossing are exact, not upper bounds (arrow_rl.evaluation.crossing)
    stop_margin: float = 0.05

    def __post_init__(self) -> None:
        if self.rate_mode not in RATE_MODES:
            raise ValueError(f"rate_mode must be one of {', '.join(RATE_MODES)}, got {self.rate_mode!r}")
        if self.warmup_s < 0 or self.span_s <= 0:
            raise ValueError(f"need warmup_s >= 0 and span_s > 0, got {self.warmup_s}, {self.span_s}")
        if len(self.seeds) < 1 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and non-empty, got {self.seeds}")
        if self.rel_tol <= 0 or self.ceiling_factor <= 1:
            raise ValueError(f"need rel_tol > 0 and ceiling_factor > 1, got {self.rel_tol}, {self.ceiling_factor}")
        if self.growth not in GROWTHS:
            raise ValueError(f"growth must be one of {', '.join(GROWTHS)}, got {self.growth!r}")
        if self.jitter_s < 0 or not 0 <= self.stop_margin < 0.9:
            raise ValueError(f"need jitter_s >= 0 and 0 <= stop_margin < 0.9, got {self.jitter_s}, {self.stop_margin}")

    def describe(self) -> dict:
        return dataclasses.asdict(self) | {"seeds": list(self.seeds)}


@dataclass(frozen=True)
class LoadSource:
    """What a scenario replays: a trace or a generator spec (exactly one)."""

    name: str
    trace: Workload | None = None
    spec: GeneratorSpecT | None = None

    def __post_init__(self) -> None:
        if (self.trace is None) == (self.spec is None):
            raise ValueError("a load source is a trace or a generator spec, exactly one")
        if self.trace is not None and (len(self.trace) < 2 or self.trace.mean_rate <= 0):
            raise ValueError(f"trace {self.name!r} needs at least 2 requests over a positive time span")

    @property
    def base_rate(self) -> float:
        """Request rate (req/s) at factor 1: the trace's mean rate or the spec's long-run mean rate."""
        if self.trace is not None:
            return self.trace.mean_rate
        return generator_mean_rate(self.spec)


@dataclass(frozen=True)
class Load:
    """One measured load: served in full, counted from ``count_from_s``."""

    workload: Workload
    count_from_s: float
    counted_span_s: float
    counted_requests: int

    @property
    def offered_rate(self) -> float:
        """Counted requests per second of counted span: the rate a serving rate reports."""
        return self.counted_requests / self.counted_span_s if self.counted_span_s > 0 else 0.0

    @property
    def short_span(self) -> bool:
        return self.counted_span_s < MIN_TRUSTED_SPAN_S


def generator_mean_rate(spec: GeneratorSpecT) -> float:
    if isinstance(spec, MMPPSpec):
        return spec.mean_rate
    if isinstance(spec, StagesSpec):
        return sum(s.rate * s.duration_s for s in spec.stages) / spec.horizon_s
    return float(spec.rate)  # poisson, gamma, phase_shift


def spec_at_rate_factor(spec: GeneratorSpecT, k: float) -> GeneratorSpecT:
    """The same generator with every arrival rate multiplied by ``k`` (time structure unchanged)."""
    if isinstance(spec, MMPPSpec):
        return spec.model_copy(update={"rates": (spec.rates[0] * k, spec.rates[1] * k)})
    if isinstance(spec, StagesSpec):
        return spec.model_copy(update={"stages": [s.model_copy(update={"rate": s.rate * k}) for s in spec.stages]})
    return spec.model_copy(update={"rate": spec.rate * k})


# Prefix block ids are stored flat (``prefix_hashes``) with per-request offsets (N + 1 entries):
# not per-request columns, so they are re-assembled request by request.
_PREFIX_FIELDS = ("prefix_hashes", "prefix_offsets")


def _columns(w: Workload) -> list[str]:
    """Per-request column names of a workload (every ndarray field but the flat prefix ids), so
    added columns travel too."""
    return [f.name for f in dataclasses.fields(w)
            if isinstance(getattr(w, f.name), np.ndarray) and f.name not in _PREFIX_FIELDS]


def _assemble(parts: list[tuple[Workload, np.ndarray, np.ndarray]], like: Workload, name: str,
              id_shifts: list[int] | None = None) -> Workload:
    """Concatenate (workload, row indices, new arrival times) parts into one workload sorted by
    arrival; each copied request keeps its own prefix block ids (Mooncake ``hash_ids``), shifted by
    ``id_shifts[j]`` for part ``j`` when given (copies that must not share cached prefixes)."""
    cols = _columns(like)
    arrival = np.concatenate([t for _, _, t in parts]) if parts else np.empty(0)
    order = np.argsort(arrival, kind="stable")
    data = {c: np.concatenate([getattr(w, c)[idx] for w, idx, _ in parts])[order] if parts
            else getattr(like, c)[:0] for c in cols}
    data["arrival_s"] = arrival[order]
    out = dataclasses.replace(like, **data, name=name, prefix_hashes=None, prefix_offsets=None)
    if like.prefix_hashes is None:
        return out
    shifts = id_shifts or [0] * len(parts)
    ids = [w.prefix_ids(int(i)) + shift for (w, idx, _), shift in zip(parts, shifts) for i in idx]
    return out.with_prefix_hashes([ids[k] for k in order], like.prefix_block_tokens)


def _loop_period(w: Workload) -> float:
    """A workload looped end to end repeats every (span + one mean gap) seconds."""
    return w.duration_s + 1.0 / w.mean_rate


def cyclic_window(w: Workload, start_s: float, length_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows and re-based times of the requests in [start_s, start_s + length_s) of ``w`` looped
    end to end (time 0 = the first arrival)."""
    period = _loop_period(w)
    t0 = w.arrival_s - w.arrival_s[0]
    rows, times = [], []
    for k in range(int(math.floor(start_s / period)), int(math.floor((start_s + length_s) / period)) + 1):
        t = t0 + k * period
        lo = int(np.searchsorted(t, start_s, side="left"))
        hi = int(np.searchsorted(t, start_s + length_s, side="left"))
        rows.append(np.arange(lo, hi))
        times.append(t[lo:hi] - start_s)
    return np.concatenate(rows), np.concatenate(times)


def with_warmup(w: Workload, warmup_s: float, rebase: bool = True) -> tuple[Workload, float]:
    """``w`` preceded by its own first ``warmup_s`` seconds (looped if shorter): (load, count_from_s).
    ``rebase``: time 0 is ``w``'s first arrival (else its own time 0, as for a generator's window,
    so that nested loads keep every shared request at the same time)."""
    if warmup_s <= 0 or len(w) == 0:
        return w, 0.0
    t0 = w.arrival_s[0] if rebase else 0.0
    if rebase:
        idx, t = cyclic_window(w, 0.0, warmup_s)
    else:
        idx = np.flatnonzero(w.arrival_s < warmup_s)
        t = w.arrival_s[idx]
    main = np.arange(len(w))
    return _assemble([(w, idx, t), (w, main, w.arrival_s - t0 + warmup_s)], w, w.name), warmup_s


def build_load(source: LoadSource, factor: float, seed: int, protocol: Protocol,
               master: "GeneratorMaster | None" = None) -> Load:
    """The load ``source`` offers at rate factor ``factor`` under ``protocol`` with ``seed``
    (``master``: the seed's generator draw, to skip drawing it again; ``generator_master``)."""
    if not factor > 0:
        raise ValueError(f"rate factor must be > 0, got {factor}")
    name = f"{source.name}@x{factor:.4g}/s{seed}"
    if protocol.rate_mode == "scale":
        if source.trace is not None:
            w = source.trace
            if seed != 0:  # a different seed = the trace rotated by a seeded offset (its loop unchanged)
                offset = np.random.default_rng([seed, 0x5CA1E]).uniform(0, _loop_period(w))
                idx, t = cyclic_window(w, offset, _loop_period(w))
                w = _assemble([(w, idx, t)], w, w.name)
        else:
            w = generate(source.spec, seed)
        w = dataclasses.replace(w.scaled(factor), name=name)
        span = w.duration_s
        loaded, count_from = with_warmup(w, protocol.warmup_s)
        return Load(loaded, count_from, span, len(w))
    if source.trace is not None:
        return _superposed_trace(source.trace, factor, seed, protocol, name)
    w, count_from = nested_generator_load(source.spec, factor, seed, protocol, master)
    w = dataclasses.replace(w, name=name)
    return Load(w, count_from, source.spec.horizon_s, int(w.arrival_s.size - np.searchsorted(
        w.arrival_s, count_from, side="left")))


def _superposed_trace(w: Workload, factor: float, seed: int, protocol: Protocol, name: str) -> Load:
    """``ceil(factor)`` copies of a window of trace ``w`` (``protocol.growth``), the last thinned."""
    length = protocol.warmup_s + protocol.span_s
    aligned = protocol.growth == "aligned"
    if aligned:  # one window for every copy: where the phases are is the trace's, not the seed's
        base_offset = np.random.default_rng([seed, 0xA11]).uniform(0, _loop_period(w))
        base_idx, base_t = cyclic_window(w, base_offset, length)
    parts = []
    for j in range(int(math.ceil(factor))):
        rng = np.random.default_rng([seed, j, 0x5EED])
        if aligned:
            idx = base_idx
            t = base_t + (rng.uniform(-0.5, 0.5, idx.size) * protocol.jitter_s if j > 0 else 0.0)
            t = np.clip(t, 0.0, np.nextafter(length, 0.0))
        else:
            offset = rng.uniform(0, _loop_period(w))
            idx, t = cyclic_window(w, offset, length)
        keep = factor - j  # >= 1 for every copy but the last
        if keep < 1:
            u = rng.random(idx.size)
            idx, t = idx[u < keep], t[u < keep]
        parts.append((w, idx, t))
    # aligned copies get their own prefix ids (shifted past every id of the trace j times)
    stride = int(w.prefix_hashes.max(initial=0)) + 1 if w.prefix_hashes is not None else 0
    loaded = _assemble(parts, w, name, [j * stride for j in range(len(parts))] if aligned else None)
    counted = int(loaded.arrival_s.size - np.searchsorted(loaded.arrival_s, protocol.warmup_s, side="left"))
    return Load(loaded, protocol.warmup_s, protocol.span_s, counted)


@dataclass(frozen=True)
class GeneratorMaster:
    """One seed's generator draw at the ceiling factor, from which every lower factor is derived."""

    workload: Workload
    marks: np.ndarray      # thinning: request i is kept at factor k iff marks[i] < k / ceiling
    compress: bool         # gamma renewal: keep the first requests, time-compressed, instead of thinning
    ceiling: float


def generator_master(spec: GeneratorSpecT, seed: int, ceiling: float) -> GeneratorMaster:
    """The draw ``nested_generator_load`` derives every factor of ``seed`` from."""
    w = generate(spec_at_rate_factor(spec, ceiling), seed)
    marks = np.random.default_rng([seed, 0x7417]).random(len(w))
    return GeneratorMaster(w, marks, isinstance(spec, GammaSpec), float(ceiling))


def nested_generator_load(spec: GeneratorSpecT, factor: float, seed: int, protocol: Protocol,
                          master: GeneratorMaster | None = None) -> tuple[Workload, float]:
    """(load with warm-up, count_from_s) of generator ``spec`` at ``factor``, derived from the
    seed's draw at the ceiling factor (module docstring), so loads are nested across factors."""
    ceiling = max(protocol.ceiling_factor, factor)
    if master is None or master.ceiling < ceiling:
        master = generator_master(spec, seed, ceiling)
    m = master.workload
    if master.compress:
        stretch = master.ceiling / factor
        n = int(np.searchsorted(m.arrival_s * stretch, spec.horizon_s, side="left"))
        rows = np.arange(n)
        w = _assemble([(m, rows, m.arrival_s[:n] * stretch)], m, m.name)
    else:
        rows = np.flatnonzero(master.marks < factor / master.ceiling)
        w = _assemble([(m, rows, m.arrival_s[rows])], m, m.name)
    return with_warmup(w, protocol.warmup_s, rebase=False)
