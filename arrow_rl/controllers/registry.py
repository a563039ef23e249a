"""``make_policy(spec)``: every instance-scheduling policy the evaluator can run, by name.

A ``Policy`` bundles what one run needs: the cluster mode, a *fresh* request router, a fresh
controller (or None) and the initial number of prefill instances. Fresh objects per call matter
because routers and controllers keep per-run state (cooldown clocks, sustain counters).

Disaggregated baselines (static, Dynamo, oracle, mpc, learned checkpoints) route with Arrow's
Algorithm 1 without flips, so that comparisons with Arrow isolate instance scheduling, as in the
paper's static-versus-adaptive ablation (§6.3).

Every disaggregated policy's router is Algorithm 1 wrapped in ``MixedDispatcher`` (
docs/design_mixed_role.md "Decided"): a controller that flips an instance to MIXED gets it served
with plain requests. While no instance is MIXED the dispatcher hands every call straight to
Algorithm 1, so results are bit-identical to the bare router (tested). ``mixed_config`` sets its
policy for every one of them.

Static splits: ``static:P`` is P prefill and N−P decode instances (1 <= P <= N−1). ``static:P:D:M``
adds a MIXED pool: P prefill, D decode and M MIXED instances, P + D + M = N, M >= 1, and
P and D both zero or both at least 1; requests split between Algorithm 1 (no flips) and the MIXED
instances by ``MixedDispatcher`` (``mixed_config``, default policy ``cost``). ``static:0:0:N`` is an
all-MIXED cluster, which serves exactly as ``colocated``; ``static:P:D:0`` is ``static:P``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from arrow_rl.cluster.base import Mode
from arrow_rl.control import Controller
from arrow_rl.arrow.config import ArrowConfig, ArrowState
from arrow_rl.arrow.mixed import MixedConfig, MixedDispatcher
from arrow_rl.arrow.monitor import ArrowIntervalController, ArrowMonitor
from arrow_rl.controllers.baselines import (
    DynamoConfig,
    DynamoPlannerController,
    NoFlipController,
    OracleConfig,
    OracleController,
)
from arrow_rl.controllers.mpc import MpcConfig, MpcController

# Checkpoint loaders: ``loader(path) -> Controller``. Packages register theirs through the
# ``arrow_rl.checkpoint_loaders`` entry point group (the agents package does, in pyproject.toml) or
# by calling ``register_checkpoint_loader``; the core never imports them by name.
CHECKPOINT_LOADER_GROUP = "arrow_rl.checkpoint_loaders"
_CHECKPOINT_LOADERS: dict[str, Callable[[str], Controller]] = {}


def register_checkpoint_loader(name: str, loader: Callable[[str], Controller]) -> None:
    """Register ``loader(path) -> Controller`` for saved controllers (a plugin's registration hook)."""
    _CHECKPOINT_LOADERS[name] = loader


def checkpoint_loaders() -> dict[str, Callable[[str], Controller]]:
    """Registered loaders plus the ``arrow_rl.checkpoint_loaders`` entry points (loaded on first use)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=CHECKPOINT_LOADER_GROUP):
        if ep.name not in _CHECKPOINT_LOADERS:
            _CHECKPOINT_LOADERS[ep.name] = ep.load()
    return dict(_CHECKPOINT_LOADERS)


# Checkpoint inspectors: ``inspect(path, **context) -> list[str]`` of warnings about running a saved
# controller in ``context`` (preset, num_instances, slo_ttft_s, slo_tpot_s, live); registered like the
# loaders, through the ``arrow_rl.checkpoint_inspectors`` entry point group.
CHECKPOINT_INSPECTOR_GROUP = "arrow_rl.checkpoint_inspectors"
_CHECKPOINT_INSPECTORS: dict[str, Callable[..., list[str]]] = {}


def register_checkpoint_inspector(name: str, inspect: Callable[..., list[str]]) -> None:
    """Register ``inspect(path, **context) -> warnings`` (a plugin's registration hook)."""
    _CHECKPOINT_INSPECTORS[name] = inspect


def checkpoint_warnings(path: str, **context: Any) -> list[str]:
    """Every registered inspector's warnings about running checkpoint ``path`` in ``context``."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=CHECKPOINT_INSPECTOR_GROUP):
        if ep.name not in _CHECKPOINT_INSPECTORS:
            _CHECKPOINT_INSPECTORS[ep.name] = ep.load()
    return [w for inspect in _CHECKPOINT_INSPECTORS.values() for w in inspect(path, **context)]


def load_checkpoint(path: str) -> Controller:
    """Load a saved controller with the first registered loader (clear error when none is)."""
    loaders = checkpoint_loaders()
    if not loaders:
        raise ValueError(f"{path}: no checkpoint loader is registered; install arrow-rl with its agents package "
                         f"(pip install -e .) so the {CHECKPOINT_LOADER_GROUP!r} entry point exists")
    return next(iter(loaders.values()))(path)


BUILTIN_SPECS = ("arrow", "arrow-interval", "colocated", "static:P", "static-best", "static-best-pd", "dynamo",
                 "oracle", "mpc")


@dataclass
class Policy:
    """One policy, ready for ``run_policy``."""

    name: str
    mode: Mode
    router: Any                   # a RequestRouter instance
    controller: Controller | None
    initial_prefill: int | None   # None in colocated mode
    needs_cluster: bool = False   # controller.bind_cluster(cluster) before the run (oracle, mpc)
    extra: dict = field(default_factory=dict)
    initial_mixed: int = 0        # MIXED instances at start (static:P:D:M), the last ones


def _least_loaded_router() -> Any:
    from arrow_rl.routing import make_router  # written by the emulator/simple-router work

    return make_router("least-loaded")


def default_initial_prefill(num_instances: int, config: ArrowConfig | None = None) -> int:
    """§6.1's fleet starts 4P4D on 8 instances: half, at least 1 and at most N−1."""
    if config is not None and config.initial_prefill is not None:
        p = config.initial_prefill
    else:
        p = num_instances // 2
    return max(1, min(num_instances - 1, p))


def valid_specs_message() -> str:
    return ("valid controllers: " + ", ".join(BUILTIN_SPECS)
            + " (static:P with 1 <= P <= N-1; static:P:D:M with P+D+M = N, M of them MIXED), "
              "or a path to a saved controller checkpoint")


def check_spec(spec: str) -> None:
    """Check what can be checked of a controller spec before any cluster exists: a built-in name (its
    cluster-dependent parts, like static:P's range, wait for ``make_policy``) or a checkpoint that
    loads. Why: ``deploy`` calls this before it asks for a token or contacts the router, so a
    mistyped checkpoint path is reported at once, not only once a router is up."""
    s = spec.strip()
    if s in BUILTIN_SPECS or s.startswith("static:"):
        return
    if not s or not Path(s).exists():
        raise ValueError(f"unknown controller {spec!r}: not a built-in controller and no such checkpoint "
                         f"directory; {valid_specs_message()}")
    load_checkpoint(s)   # reads metadata.json, then the model: a damaged checkpoint names its file here


def make_policy(
    spec: str,
    num_instances: int,
    *,
    arrow_config: ArrowConfig | None = None,
    dynamo_config: DynamoConfig | None = None,
    oracle_config: OracleConfig | None = None,
    mpc_config: MpcConfig | None = None,
    mixed_config: MixedConfig | None = None,
) -> Policy:
    """Build the policy named by ``spec`` for a cluster of ``num_instances``.

    ``static-best`` is not a single policy but the splits ``static:1..N-1`` (``expand_spec``); the
    suite's searches over splits are ``static-oracle`` and ``static-tuned``. Any other existing filesystem path is loaded with the registered
    checkpoint loader (``load_checkpoint``) and paired with Arrow's router (flips disabled).
    """
    from arrow_rl.arrow.router import ArrowRouter

    if num_instances < 2:
        raise ValueError(f"a prefill/decode cluster needs at least 2 instances, got {num_instances}")
    cfg = arrow_config or ArrowConfig()
    half = default_initial_prefill(num_instances, cfg)
    s = spec.strip()

    def alg1(state: ArrowState | None = None, flips: bool = False) -> MixedDispatcher:
        return _dispatched(ArrowRouter(cfg, state, enable_flips=flips), mixed_config)

    if s == "arrow":
        # Faithful event-driven Arrow: Alg. 1 flips in the router, Alg. 2 in the monitor, one state.
        state = ArrowState()
        return Policy("arrow", Mode.DISAGGREGATED, alg1(state, flips=True),
                      ArrowMonitor(cfg, state), half)
    if s == "arrow-interval":
        return Policy("arrow-interval", Mode.DISAGGREGATED, alg1(),
                      ArrowIntervalController(cfg), half)
    if s == "colocated":
        return Policy("colocated", Mode.COLOCATED, _least_loaded_router(), NoFlipController("colocated"), None)
    if s.startswith("static:") and s.count(":") == 3:
        return _static_mixed(spec, num_instances, cfg, mixed_config)
    if s.startswith("static:"):
        p = _static_prefill(spec, num_instances)
        return Policy(f"static:{p}", Mode.DISAGGREGATED, alg1(),
                      NoFlipController(f"static:{p}"), p)
    if s in ("static-best", "static-best-pd"):
        raise ValueError(f"{s} is a search over static splits; expand it with expand_spec() "
                         "(arrow-rl evaluate does this)")
    if s == "dynamo":
        return Policy("dynamo", Mode.DISAGGREGATED, alg1(),
                      DynamoPlannerController(dynamo_config), half)
    if s == "oracle":
        return Policy("oracle", Mode.DISAGGREGATED, alg1(),
                      OracleController(oracle_config), half, needs_cluster=True)
    if s == "mpc":   # the oracle's search on a forecast of the recent past: deployable, but branches the emulator
        return Policy("mpc", Mode.DISAGGREGATED, alg1(),
                      MpcController(mpc_config), half, needs_cluster=True)
    if s and Path(s).exists():
        controller = load_checkpoint(s)
        return Policy(getattr(controller, "name", Path(s).name) or Path(s).name, Mode.DISAGGREGATED,
                      alg1(), controller, half, extra={"checkpoint": s})
    raise ValueError(f"unknown controller {spec!r}; {valid_specs_message()}")


def _static_prefill(spec: str, num_instances: int) -> int:
    """P of ``static:P``, checked: an integer in 1..N−1."""
    try:
        p = int(spec.strip().split(":", 1)[1])
    except ValueError:
        raise ValueError(f"bad controller {spec!r}: static:P needs an integer P; {valid_specs_message()}") from None
    if not 1 <= p <= num_instances - 1:
        raise ValueError(f"bad controller {spec!r}: P must be in 1..{num_instances - 1} for {num_instances} instances")
    return p


def _dispatched(router: Any, mixed_config: MixedConfig | None) -> MixedDispatcher:
    """Algorithm 1 behind the MIXED dispatcher (module docstring): a no-op until an instance is MIXED."""
    return MixedDispatcher(router, mixed_config)


def _static_mixed(spec: str, num_instances: int, cfg: ArrowConfig, mixed_config: MixedConfig | None) -> Policy:
    """``static:P:D:M``: a fixed split with a MIXED pool (module docstring)."""
    from arrow_rl.arrow.router import ArrowRouter

    try:
        p, d, m = (int(x) for x in spec.strip().split(":")[1:])
    except ValueError:
        raise ValueError(f"bad controller {spec!r}: static:P:D:M needs three integers; {valid_specs_message()}") from None
    if min(p, d, m) < 0 or p + d + m != num_instances:
        raise ValueError(f"bad controller {spec!r}: P, D and M must be >= 0 and add up to {num_instances} instances")
    if (p == 0) != (d == 0):
        raise ValueError(f"bad controller {spec!r}: a disaggregated path needs both a prefill and a decode "
                         f"instance (give P and D both >= 1, or both 0 for an all-MIXED cluster)")
    if m == 0:
        return make_policy(f"static:{p}", num_instances, arrow_config=cfg, mixed_config=mixed_config)
    name = f"static:{p}:{d}:{m}"
    router = _dispatched(ArrowRouter(cfg, enable_flips=False), mixed_config)
    return Policy(name, Mode.DISAGGREGATED, router, NoFlipController(name), p, initial_mixed=m,
                  extra={"mixed_policy": router.config.mixed_policy})


def expand_spec(spec: str, num_instances: int) -> list[str]:
    """``static-best`` and ``static-best-pd`` → the P/D splits ``static:1 .. static:N-1``, one policy
    each; anything else → itself. The suite's split searches (``static-oracle``, ``static-tuned``)
    also try splits with a MIXED pool, coarse to fine (``arrow_rl.evaluation.seeded_search``)."""
    if spec.strip() in ("static-best", "static-best-pd"):
        return [f"static:{p}" for p in range(1, num_instances)]
    return [spec.strip()]
