"""Seeded synthetic workloads: arrival processes x request-length mixes, described by pydantic specs.

Why these kinds: Arrow's claim is that the best prefill/decode split moves with the workload, so the
generators make the two things that move it controllable on their own:

* *arrivals* - ``poisson`` (memoryless baseline), ``gamma`` (renewal process with a chosen
  interarrival CV; BurstGPT fits gamma interarrivals to real bursty traffic), ``mmpp`` (2-state
  Markov-modulated Poisson: calm/burst regimes with exponential dwell times), ``stages`` (a
  piecewise schedule of (rate, duration) pairs, for step changes in load);
* *lengths* - ``fixed``, ``lognormal`` (mean and CV) or ``empirical`` (resampled from a trace), and
  ``phase_shift``: phases alternating between prefill-heavy (long input, short output) and
  decode-heavy (short input, long output) mixes at a steady rate, the shift Arrow adapts to.

*prefixes* (optional ``prefixes:``, for prefix caching) - ``shared_prompt`` (every request starts
with one of a few system prompts) or ``conversations`` (every arrival starts a multi-turn
conversation whose later turns resend the history, so each turn's prompt extends the last one).

Determinism: ``generate(spec, seed)`` derives independent streams from ``seed`` (arrivals, lengths
and, with ``prefixes``, the prefix structure), so the same seed gives the same workload, and
changing only the length mix keeps the arrival times identical.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, field_validator, model_validator

from arrow_rl.workload.workload import Workload, shared_prefix_ids

# ------------------------------------------------------------------------- length distributions


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Refuse specs that would generate more requests than this (expected count): the arrays of one
# workload take ~40 bytes a request, so 50 M is ~2 GB, far beyond any trace we replay.
MAX_REQUESTS = 50_000_000


class FixedLength(_Spec):
    """Every request has the same token count."""

    kind: Literal["fixed"] = "fixed"
    tokens: int = Field(gt=0)


class LognormalLength(_Spec):
    """Lognormal token counts with the given mean and coefficient of variation, rounded, clipped."""

    kind: Literal["lognormal"] = "lognormal"
    mean: float = Field(gt=0)
    cv: float = Field(default=1.0, ge=0)
    min_tokens: int = Field(default=1, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> "LognormalLength":
        if self.max_tokens is not None and self.max_tokens < self.min_tokens:
            raise ValueError(f"max_tokens ({self.max_tokens}) < min_tokens ({self.min_tokens})")
        # a mean outside [min_tokens, max_tokens] would be silently clipped to a different mean
        if self.mean < self.min_tokens or (self.max_tokens is not None and self.mean > self.max_tokens):
            raise ValueError(f"mean {self.mean:g} is outside [min_tokens, max_tokens] = "
                             f"[{self.min_tokens}, {self.max_tokens}]")
        return self


class EmpiricalLength(_Spec):
    """Token counts resampled (with replacement) from one column of a trace (path or bundled name)."""

    kind: Literal["empirical"] = "empirical"
    trace: str
    column: Literal["input", "output"]


LengthDistribution = Annotated[Union[FixedLength, LognormalLength, EmpiricalLength],
                               Field(discriminator="kind")]


class LengthMix(_Spec):
    """Input and output lengths drawn independently."""

    input: LengthDistribution
    output: LengthDistribution


class TraceMix(_Spec):
    """(input, output) pairs resampled jointly from a trace, keeping their correlation."""

    trace: str


def _mix_kind(value: object) -> str:
    """A mix with a ``trace`` key resamples a trace; anything else is an input/output length mix
    (a tagged union, so an error names the fields of the one form meant, not of both)."""
    if isinstance(value, TraceMix) or (isinstance(value, dict) and "trace" in value):
        return "trace_mix"
    return "length_mix"


Mix = Annotated[Union[Annotated[LengthMix, Tag("length_mix")], Annotated[TraceMix, Tag("trace_mix")]],
                Discriminator(_mix_kind)]
_MIX_TAGS = ("length_mix", "trace_mix")

# Defaults for the phase-shift kind. Prefill-heavy echoes the Azure code trace (long prompts, ~30
# output tokens); decode-heavy is its mirror image (short prompts, long generations).
PREFILL_HEAVY = LengthMix(input=LognormalLength(mean=3000, cv=0.6, max_tokens=16384),
                          output=LognormalLength(mean=30, cv=0.8, max_tokens=1024))
DECODE_HEAVY = LengthMix(input=LognormalLength(mean=300, cv=0.6, max_tokens=16384),
                         output=LognormalLength(mean=600, cv=0.6, max_tokens=4096))
DEFAULT_MIX = LengthMix(input=LognormalLength(mean=1024, cv=1.0, max_tokens=16384),
                        output=LognormalLength(mean=200, cv=1.0, max_tokens=4096))


# ------------------------------------------------------------------------------ prefixes


class SharedPromptPrefixes(_Spec):
    """Each request starts with one of ``groups`` system prompts of ``prompt_tokens`` tokens (chosen
    uniformly at random), then its own input drawn from the mix: its input is the sum."""

    kind: Literal["shared_prompt"] = "shared_prompt"
    groups: int = Field(ge=1)
    prompt_tokens: int = Field(ge=1)


class ConversationPrefixes(_Spec):
    """Every arrival of the spec starts a conversation; the rate counts conversations. Turn k+1
    arrives an exponential think time (mean ``think_time_s``) after turn k arrived, and its prompt
    is turn k's prompt, turn k's answer and a new message drawn from the mix, so it extends turn k
    (a chat client resends the history). A conversation has 1 + a geometric number of turns (mean
    ``mean_turns``) and stops before its context would pass ``max_context_tokens`` or the horizon.
    With ``groups`` > 0 each conversation starts with one of ``groups`` shared system prompts of
    ``prompt_tokens`` tokens."""

    kind: Literal["conversations"] = "conversations"
    mean_turns: float = Field(default=3.0, ge=1)
    think_time_s: float = Field(default=30.0, gt=0)
    max_context_tokens: int = Field(default=32768, ge=2)
    groups: int = Field(default=0, ge=0)
    prompt_tokens: int = Field(default=0, ge=0)


Prefixes = Annotated[Union[SharedPromptPrefixes, ConversationPrefixes], Field(discriminator="kind")]

# chained ids of conversation c's own blocks; distinct from the shared prompts' (group + 1) << 24
_CONVERSATION_ID_BASE = 1 << 48


def _conversation_ids(conversation: int, first_block: int, num_blocks: int) -> list[int]:
    base = _CONVERSATION_ID_BASE + (conversation << 24)
    return [base + j for j in range(first_block, num_blocks)]


def apply_prefixes(workload: Workload, prefixes: SharedPromptPrefixes | ConversationPrefixes,
                   rng: np.random.Generator, horizon_s: float, mix_sampler) -> Workload:
    """Give ``workload`` the prefix structure ``prefixes`` describes (see the two specs).
    ``mix_sampler(n)`` draws ``n`` (input, output) pairs for the later turns of conversations."""
    n = len(workload)
    if isinstance(prefixes, SharedPromptPrefixes):
        groups = rng.integers(0, prefixes.groups, size=n)
        inputs = workload.input_tokens + prefixes.prompt_tokens
        w = Workload(workload.arrival_s, inputs, workload.output_tokens, name=workload.name, source=workload.source)
        return w.with_shared_prefixes(groups, prefixes.prompt_tokens)
    p = prefixes
    sys_tokens = p.prompt_tokens if p.groups else 0
    extra_turns = rng.geometric(1.0 / p.mean_turns, size=n) - 1 if p.mean_turns > 1 else np.zeros(n, np.int64)
    arr, inp, out, ids = [], [], [], []
    for c, (t, i0, o0, more) in enumerate(zip(workload.arrival_s.tolist(), workload.input_tokens.tolist(),
                                               workload.output_tokens.tolist(), extra_turns.tolist())):
        group = int(rng.integers(0, p.groups)) if p.groups else -1
        sys_ids = shared_prefix_ids(group, sys_tokens // 16) if p.groups else []
        prompt, answer = sys_tokens + i0, o0
        follow = mix_sampler(more) if more else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        gaps = rng.exponential(p.think_time_s, size=more)
        for turn in range(more + 1):
            if prompt + answer > p.max_context_tokens or t >= horizon_s:
                break
            arr.append(t), inp.append(prompt), out.append(answer)
            # the whole context (prompt and answer) is hashed: the next turn repeats it
            ids.append(sys_ids + _conversation_ids(c, len(sys_ids), (prompt + answer) // 16))
            if turn < more:
                t += float(gaps[turn])
                prompt, answer = prompt + answer + int(follow[0][turn]), int(follow[1][turn])
    order = np.argsort(np.asarray(arr, dtype=np.float64), kind="stable")
    w = Workload(np.asarray(arr, dtype=np.float64)[order], np.asarray(inp, dtype=np.int64)[order],
                 np.asarray(out, dtype=np.int64)[order], name=workload.name, source=workload.source)
    return w.with_prefix_hashes([ids[k] for k in order.tolist()], 16)


# ------------------------------------------------------------------------------ workload kinds


class _WorkloadSpec(_Spec):
    name: str | None = None
    mix: Mix = DEFAULT_MIX
    prefixes: Prefixes | None = None

    @property
    def horizon_s(self) -> float:
        """Length of the arrival window in seconds (all arrivals fall in [0, horizon_s))."""
        return float(self.duration_s)  # type: ignore[attr-defined]

    @property
    def expected_requests(self) -> float:
        """Mean number of arrivals (an upper bound for mmpp: its burst rate throughout)."""
        return float(self.rate) * self.horizon_s  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _size(self) -> "_WorkloadSpec":
        n = self.expected_requests
        if n > MAX_REQUESTS:
            raise ValueError(f"rate x duration gives about {n:.3g} requests; the limit is {MAX_REQUESTS:,} "
                             "(lower the rate or the duration)")
        return self


class PoissonSpec(_WorkloadSpec):
    kind: Literal["poisson"] = "poisson"
    rate: float = Field(gt=0, description="requests per second")
    duration_s: float = Field(gt=0)


class GammaSpec(_WorkloadSpec):
    """Renewal arrivals with gamma interarrivals: mean 1/rate, coefficient of variation ``cv``."""

    kind: Literal["gamma"] = "gamma"
    rate: float = Field(gt=0)
    cv: float = Field(gt=0, description="interarrival CV; 1 = Poisson, >1 bursty, <1 regular")
    duration_s: float = Field(gt=0)


class MMPPSpec(_WorkloadSpec):
    """2-state Markov-modulated Poisson process: calm and burst states with exponential dwells."""

    kind: Literal["mmpp"] = "mmpp"
    rates: tuple[float, float] = Field(description="(calm, burst) requests per second")
    mean_dwell_s: tuple[float, float] = Field(description="mean time in (calm, burst) state")
    duration_s: float = Field(gt=0)
    start_state: Literal["calm", "burst", "stationary"] = "stationary"

    @field_validator("rates")
    @classmethod
    def _rates(cls, v: tuple[float, float]) -> tuple[float, float]:
        if min(v) < 0 or max(v) <= 0:
            raise ValueError(f"rates must be >= 0 with at least one > 0, got {v}")
        return v

    @field_validator("mean_dwell_s")
    @classmethod
    def _dwell(cls, v: tuple[float, float]) -> tuple[float, float]:
        if min(v) <= 0:
            raise ValueError(f"mean dwell times must be > 0, got {v}")
        return v

    @property
    def mean_rate(self) -> float:
        (r0, r1), (d0, d1) = self.rates, self.mean_dwell_s
        return (r0 * d0 + r1 * d1) / (d0 + d1)

    @property
    def expected_requests(self) -> float:
        return max(self.rates) * self.horizon_s


class Stage(_Spec):
    """One stage of a schedule: arrivals at ``rate`` for ``duration_s`` (gamma with ``cv``)."""

    rate: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    cv: float = Field(default=1.0, gt=0)
    mix: Mix | None = None  # None: the schedule's mix


class StagesSpec(_WorkloadSpec):
    kind: Literal["stages"] = "stages"
    stages: list[Stage] = Field(min_length=1)

    @property
    def horizon_s(self) -> float:
        return float(sum(stage.duration_s for stage in self.stages))

    @property
    def expected_requests(self) -> float:
        return float(sum(stage.rate * stage.duration_s for stage in self.stages))

    @field_validator("stages", mode="before")
    @classmethod
    def _pairs(cls, v: object) -> object:
        # Accept the compact form [[rate, duration], ...] as well as mappings.
        if isinstance(v, list):
            return [{"rate": s[0], "duration_s": s[1]} if isinstance(s, (list, tuple)) else s for s in v]
        return v


class PhaseShiftSpec(_WorkloadSpec):
    """Steady arrivals whose length mix cycles through ``phases`` every ``phase_s`` seconds."""

    kind: Literal["phase_shift"] = "phase_shift"
    rate: float = Field(gt=0)
    duration_s: float = Field(gt=0)
    phase_s: float = Field(gt=0)
    cv: float = Field(default=1.0, gt=0)
    phases: list[Mix] = Field(default_factory=lambda: [PREFILL_HEAVY, DECODE_HEAVY], min_length=1)


GeneratorSpec = Annotated[Union[PoissonSpec, GammaSpec, MMPPSpec, StagesSpec, PhaseShiftSpec],
                          Field(discriminator="kind")]
GENERATOR_KINDS: tuple[str, ...] = ("poisson", "gamma", "mmpp", "stages", "phase_shift")
_SPEC_ADAPTER: TypeAdapter = TypeAdapter(GeneratorSpec)


def parse_spec(data: object) -> PoissonSpec | GammaSpec | MMPPSpec | StagesSpec | PhaseShiftSpec:
    """Validate a mapping (from YAML/JSON/CLI) into a generator spec."""
    return _SPEC_ADAPTER.validate_python(data)


def load_spec(path: str | Path) -> PoissonSpec | GammaSpec | MMPPSpec | StagesSpec | PhaseShiftSpec:
    """Read a YAML workload spec; a top-level ``workload:`` key is accepted as a wrapper."""
    from arrow_rl.config_io import read_config_mapping

    data = read_config_mapping(path, "workload spec")
    if isinstance(data, dict) and set(data) == {"workload"}:
        data = data["workload"]
    try:
        return parse_spec(data)
    except ValidationError as exc:
        raise ValueError(f"{path}: invalid workload spec:\n{format_validation_error(exc)}") from None


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, ``field.path: message``, without pydantic's union-tag noise."""
    lines = []
    for err in exc.errors():
        loc = [str(x) for x in err["loc"]]
        if loc and loc[0] in GENERATOR_KINDS:
            loc = loc[1:]  # the first element is the union tag, already implied by 'kind'
        loc = [x for x in loc if x not in _MIX_TAGS and x not in ("fixed", "lognormal", "empirical")]
        lines.append(f"  {'.'.join(loc) or 'spec'}: {err['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ arrival processes


def poisson_arrivals(rng: np.random.Generator, rate: float, duration_s: float, start_s: float = 0.0) -> np.ndarray:
    """Homogeneous Poisson arrivals in [start_s, start_s + duration_s)."""
    return gamma_arrivals(rng, rate, 1.0, duration_s, start_s)


def gamma_arrivals(rng: np.random.Generator, rate: float, cv: float, duration_s: float,
                   start_s: float = 0.0) -> np.ndarray:
    """Renewal arrivals with gamma(shape=1/cv^2, mean=1/rate) gaps in [start_s, start_s + duration_s).

    The process starts fresh at ``start_s`` (first gap drawn from the same gamma), the usual
    benchmark-client behaviour. cv=1 is exactly the exponential, i.e. Poisson.
    """
    if rate <= 0 or duration_s <= 0:
        return np.empty(0)
    shape = 1.0 / (cv * cv)
    scale = 1.0 / (rate * shape)
    expected = rate * duration_s
    times: list[np.ndarray] = []
    t = start_s
    end = start_s + duration_s
    # Draw in blocks sized to the expected count (+ margin) so the loop runs once or twice.
    block = int(expected + 6.0 * np.sqrt(expected) * max(cv, 1.0) + 16)
    while True:
        gaps = rng.gamma(shape, scale, size=block) if cv != 1.0 else rng.exponential(1.0 / rate, size=block)
        arr = t + np.cumsum(gaps)
        times.append(arr)
        if arr[-1] >= end:
            break
        t = float(arr[-1])
    out = np.concatenate(times)
    return out[out < end]


def mmpp_arrivals(rng: np.random.Generator, rates: tuple[float, float], mean_dwell_s: tuple[float, float],
                  duration_s: float, start_state: str = "stationary") -> np.ndarray:
    """2-state MMPP on [0, duration_s): exponential dwell in each state, Poisson at its rate.

    Vectorised and exact: sojourns are drawn in blocks; within a sojourn of length L at rate r the
    count is Poisson(r L) and, given the count, Poisson arrival times are uniform on the sojourn.
    """
    if start_state == "stationary":
        p_burst = mean_dwell_s[1] / (mean_dwell_s[0] + mean_dwell_s[1])
        first = int(rng.random() < p_burst)
    else:
        first = 0 if start_state == "calm" else 1
    mean = np.asarray(mean_dwell_s, dtype=np.float64)
    rate = np.asarray(rates, dtype=np.float64)
    block = int(2.0 * duration_s / mean.sum()) + 8
    dwells: list[np.ndarray] = []
    covered, k0 = 0.0, 0
    while covered < duration_s:
        states = (first + k0 + np.arange(block)) % 2
        d = rng.exponential(mean[states])
        dwells.append(d)
        covered += float(d.sum())
        k0 += block
    dwell = np.concatenate(dwells)
    starts = np.concatenate(([0.0], np.cumsum(dwell)[:-1]))
    live = starts < duration_s
    starts, dwell = starts[live], dwell[live]
    states = (first + np.arange(starts.size)) % 2
    spans = np.minimum(starts + dwell, duration_s) - starts
    counts = rng.poisson(rate[states] * spans)
    times = np.repeat(starts, counts) + rng.random(int(counts.sum())) * np.repeat(spans, counts)
    return np.sort(times)


# ------------------------------------------------------------------------------- length sampling


@lru_cache(maxsize=8)
def _trace_columns(trace: str) -> tuple[np.ndarray, np.ndarray]:
    from arrow_rl.workload.loaders import load_workload

    w = load_workload(trace)
    return w.input_tokens, w.output_tokens


def sample_lengths(rng: np.random.Generator, dist: FixedLength | LognormalLength | EmpiricalLength,
                   n: int) -> np.ndarray:
    """Draw ``n`` token counts (int64, >= 1) from one length distribution."""
    if isinstance(dist, FixedLength):
        return np.full(n, dist.tokens, dtype=np.int64)
    if isinstance(dist, LognormalLength):
        sigma2 = np.log1p(dist.cv ** 2)
        mu = np.log(dist.mean) - sigma2 / 2.0  # so that E[X] = mean before rounding/clipping
        x = rng.lognormal(mu, np.sqrt(sigma2), size=n)
        hi = dist.max_tokens if dist.max_tokens is not None else np.inf
        return np.clip(np.rint(x), dist.min_tokens, hi).astype(np.int64)
    column = _trace_columns(dist.trace)[0 if dist.column == "input" else 1]
    return column[rng.integers(0, column.size, size=n)]


def sample_mix(rng: np.random.Generator, mix: LengthMix | TraceMix, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` (input, output) pairs from a mix."""
    if isinstance(mix, TraceMix):
        inputs, outputs = _trace_columns(mix.trace)
        idx = rng.integers(0, inputs.size, size=n)
        return inputs[idx], outputs[idx]
    return sample_lengths(rng, mix.input, n), sample_lengths(rng, mix.output, n)


# ------------------------------------------------------------------------------------ generate


def generate(spec: PoissonSpec | GammaSpec | MMPPSpec | StagesSpec | PhaseShiftSpec | dict,
             seed: int) -> Workload:
    """Build the workload a spec describes. Same (spec, seed) -> identical workload."""
    if isinstance(spec, dict):
        spec = parse_spec(spec)
    workload = _generate(spec, seed)
    if spec.prefixes is None:
        return workload
    # a third stream (spawn(3)'s first two children are spawn(2)'s: arrivals and lengths unchanged)
    prefix_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
    return apply_prefixes(workload, spec.prefixes, prefix_rng, spec.horizon_s,
                          lambda n: sample_mix(prefix_rng, spec.mix, n))


def _generate(spec, seed: int) -> Workload:
    arrival_rng, length_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    name = spec.name or f"{spec.kind}-seed{seed}"

    if isinstance(spec, StagesSpec):
        arrivals, inputs, outputs = [], [], []
        t = 0.0
        for stage in spec.stages:
            a = gamma_arrivals(arrival_rng, stage.rate, stage.cv, stage.duration_s, start_s=t)
            i, o = sample_mix(length_rng, stage.mix or spec.mix, a.size)
            arrivals.append(a), inputs.append(i), outputs.append(o)
            t += stage.duration_s
        return Workload(np.concatenate(arrivals), np.concatenate(inputs), np.concatenate(outputs),
                        name=name, source=f"generated:{spec.kind}")

    if isinstance(spec, PhaseShiftSpec):
        arrival = gamma_arrivals(arrival_rng, spec.rate, spec.cv, spec.duration_s)
        phase = (np.floor(arrival / spec.phase_s).astype(np.int64)) % len(spec.phases)
        inputs = np.empty(arrival.size, dtype=np.int64)
        outputs = np.empty(arrival.size, dtype=np.int64)
        for k, mix in enumerate(spec.phases):
            sel = phase == k
            inputs[sel], outputs[sel] = sample_mix(length_rng, mix, int(sel.sum()))
        return Workload(arrival, inputs, outputs, name=name, source=f"generated:{spec.kind}")

    if isinstance(spec, PoissonSpec):
        arrival = poisson_arrivals(arrival_rng, spec.rate, spec.duration_s)
    elif isinstance(spec, GammaSpec):
        arrival = gamma_arrivals(arrival_rng, spec.rate, spec.cv, spec.duration_s)
    elif isinstance(spec, MMPPSpec):
        arrival = mmpp_arrivals(arrival_rng, spec.rates, spec.mean_dwell_s, spec.duration_s, spec.start_state)
    else:  # pragma: no cover - the discriminated union admits nothing else
        raise TypeError(f"unknown generator spec {type(spec).__name__}")
    inputs, outputs = sample_mix(length_rng, spec.mix, arrival.size)
    return Workload(arrival, inputs, outputs, name=name, source=f"generated:{spec.kind}")
