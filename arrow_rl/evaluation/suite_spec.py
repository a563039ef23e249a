"""A scenario suite file: what is measured (scenarios) and how (the protocol), validated at load.

A suite is YAML (schema in docs/evaluation.md)::

    name: standard
    slo_tiers: {loose: {ttft_s: 10, tpot_s: 0.125}}
    protocol: {rate_mode: superpose, warmup_s: 120, span_s: 600, seeds: [0, 1, 2, 3, 4], rel_tol: 0.02}
    quick: {span_s: 300, rel_tol: 0.05}    # what --quick changes
    scenarios:
      - {name: azure-code-70b-x8, split: train, workload: azure-code,
         preset: h100-llama3.1-70b-tp4, instances: 8, slo: loose}

``split: test`` scenarios are held out: nothing (agents, Arrow's constants, reward weights) may
be trained or tuned on them; ``tests/test_suite.py`` checks that shipped configs never
name one. Errors name the file, the scenario and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from arrow_rl.config_io import format_validation_error, read_config_mapping
from arrow_rl.evaluation.protocol import LoadSource, Protocol

SUITES_DIR = Path(__file__).resolve().parents[2] / "configs" / "suites"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")


class SuiteError(ValueError):
    """A suite file that cannot be used; the message names the file and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SLOTier(_Model):
    ttft_s: float = Field(gt=0)
    tpot_s: float = Field(gt=0)


class ProtocolSpec(_Model):
    """Any subset of ``Protocol``'s fields (suite defaults, a scenario's overrides, ``quick``)."""

    rate_mode: Literal["scale", "superpose"] | None = None
    warmup_s: float | None = Field(default=None, ge=0)
    span_s: float | None = Field(default=None, gt=0)
    seeds: list[int] | None = Field(default=None, min_length=3)
    rel_tol: float | None = Field(default=None, gt=0, lt=1)
    max_evals: int | None = Field(default=None, ge=3)
    ceiling_factor: float | None = Field(default=None, gt=1)
    growth: Literal["independent", "aligned"] | None = None
    jitter_s: float | None = Field(default=None, ge=0)
    stop_margin: float | None = Field(default=None, ge=0, lt=0.9)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v

    def apply(self, protocol: Protocol) -> Protocol:
        updates: dict[str, Any] = {k: v for k, v in self.model_dump().items() if v is not None}
        if "seeds" in updates:
            updates["seeds"] = tuple(updates["seeds"])
        return replace(protocol, **updates)


class ScenarioSpec(_Model):
    name: str
    split: Literal["train", "test"]
    description: str = ""
    workload: Union[str, dict] = Field(description="bundled trace name, trace/generator file, or inline generator")
    preset: str
    instances: int = Field(ge=2, le=256)
    slo: Union[str, SLOTier] = Field(description="an slo_tiers name or {ttft_s, tpot_s}")
    protocol: ProtocolSpec = ProtocolSpec()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"scenario names are lower-case letters, digits, '.' and '-', got {v!r}")
        return v


class SuiteSpec(_Model):
    name: str
    description: str = ""
    slo_tiers: dict[str, SLOTier] = {}
    protocol: ProtocolSpec = ProtocolSpec()
    quick: ProtocolSpec = ProtocolSpec()
    scenarios: list[ScenarioSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "SuiteSpec":
        seen: set[str] = set()
        for i, s in enumerate(self.scenarios):
            if s.name in seen:
                raise ValueError(f"scenarios[{i}]: name {s.name!r} is used twice")
            seen.add(s.name)
            if isinstance(s.slo, str) and s.slo not in self.slo_tiers:
                raise ValueError(f"scenarios[{i}] ({s.name}): slo {s.slo!r} is not one of slo_tiers "
                                 f"({', '.join(self.slo_tiers) or 'none defined'})")
        return self


@dataclass(frozen=True)
class Scenario:
    """A scenario ready to measure."""

    name: str
    split: str
    description: str
    source: LoadSource
    workload_label: str
    emulator_config: Any
    slo_tier: str
    protocol: Protocol


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    description: str
    scenarios: list[Scenario]
    protocol: Protocol


def resolve_suite_path(suite: str) -> Path:
    """``standard`` (a shipped suite name) or a path to a suite YAML."""
    p = Path(suite)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise SuiteError(f"{p}: suite file not found")
        return p
    shipped = SUITES_DIR / f"{suite}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(q.stem for q in SUITES_DIR.glob("*.yaml")) if SUITES_DIR.is_dir() else []
    raise SuiteError(f"no suite {suite!r}: not a file, and not a shipped suite ({', '.join(names) or 'none found'})")


def read_suite_spec(path: Path) -> SuiteSpec:
    try:
        data = read_config_mapping(path, "suite")
    except ValueError as exc:
        raise SuiteError(str(exc)) from None
    try:
        return SuiteSpec.model_validate(data)
    except ValidationError as exc:
        raise SuiteError(f"{path}: {_with_scenario_names(format_validation_error(exc), data)}") from None


def _with_scenario_names(message: str, data: dict) -> str:
    """``scenarios.3.instances`` -> ``scenarios[3] (name).instances``: errors say which scenario."""
    scenarios = data.get("scenarios") if isinstance(data, dict) else None

    def sub(m: re.Match) -> str:
        i = int(m.group(1))
        name = scenarios[i].get("name") if isinstance(scenarios, list) and i < len(scenarios) \
            and isinstance(scenarios[i], dict) else None
        return f"scenarios[{i}]" + (f" ({name})" if name else "")

    return re.sub(r"scenarios\.(\d+)", sub, message)


def load_suite(suite: str, quick: bool = False) -> Suite:
    """Read, validate and resolve a suite (workloads loaded, presets checked)."""
    from arrow_rl.cluster.emulator.config import EmulatorConfig

    path = resolve_suite_path(suite)
    spec = read_suite_spec(path)
    base = spec.protocol.apply(Protocol())
    scenarios = []
    for i, s in enumerate(spec.scenarios):
        where = f"{path}: scenarios[{i}] ({s.name})"
        proto = s.protocol.apply(base)
        if quick:
            proto = spec.quick.apply(proto)
        tier = s.slo if isinstance(s.slo, str) else "custom"
        slo = spec.slo_tiers[s.slo] if isinstance(s.slo, str) else s.slo
        try:
            emu = EmulatorConfig(preset=s.preset, num_instances=s.instances, slo_ttft_s=slo.ttft_s,
                                 slo_tpot_s=slo.tpot_s)
        except ValidationError as exc:
            raise SuiteError(f"{where}: {format_validation_error(exc)}") from None
        source, label = _resolve_workload(s.workload, s.name, path.parent, where)
        scenarios.append(Scenario(s.name, s.split, s.description, source, label, emu, tier, proto))
    return Suite(spec.name, path, spec.description, scenarios, spec.quick.apply(base) if quick else base)


def _resolve_workload(workload: str | dict, scenario: str, base_dir: Path, where: str) -> tuple[LoadSource, str]:
    from arrow_rl.workload.bundled import BUNDLED_TRACES
    from arrow_rl.workload.generators import format_validation_error as gen_error
    from arrow_rl.workload.generators import load_spec, parse_spec
    from arrow_rl.workload.loaders import load_workload

    try:
        if isinstance(workload, dict):
            spec = parse_spec({"name": scenario, **workload})
            return LoadSource(spec.name or scenario, spec=spec), f"generator:{spec.kind}"
        if workload in BUNDLED_TRACES:
            return LoadSource(workload, trace=load_workload_bundled(workload)), workload
        p = Path(workload)
        p = p if p.is_absolute() or p.exists() else base_dir / p
        if p.suffix in (".yaml", ".yml"):
            spec = load_spec(p)
            return LoadSource(spec.name or scenario, spec=spec), str(workload)
        return LoadSource(p.stem, trace=load_workload(p)), str(workload)
    except ValidationError as exc:
        raise SuiteError(f"{where}: workload: " + "; ".join(x.strip() for x in gen_error(exc).splitlines())) from None
    except (ValueError, OSError) as exc:
        raise SuiteError(f"{where}: workload: " + "; ".join(x.strip() for x in str(exc).splitlines())) from None


def load_workload_bundled(name: str) -> Any:
    from arrow_rl.workload.bundled import load_bundled

    return load_bundled(name)


def one_scenario_suite(trace: Any, emulator_config: Any, workload_label: str, protocol: Protocol) -> Suite:
    """The suite ``arrow-rl evaluate`` runs: one scenario, ``trace`` on ``emulator_config`` under
    ``protocol``, so a first look and the leaderboard are measured by the same machinery."""
    n, preset = emulator_config.num_instances, emulator_config.preset
    scenario = Scenario(f"{trace.name}-x{n}", "custom", f"{workload_label} on {n} x {preset}",
                        LoadSource(trace.name, trace=trace), workload_label, emulator_config, "custom", protocol)
    return Suite("evaluate", Path(workload_label), "arrow-rl evaluate", [scenario], protocol)
