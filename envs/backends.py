"""How ``PDClusterEnv`` gets a cluster: a factory ``(workload, config, router, seed) -> Cluster``.

The env only ever talks to the ``arrow_rl.cluster.base.Cluster`` interface; this module is the one
place that knows the emulator exists. A live vLLM backend plugs in by passing another factory
(``PDClusterEnv(config, cluster_factory=my_live_factory)``), with no change to the env.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from arrow_rl.cluster.base import Cluster
from arrow_rl.workload.workload import Workload

if TYPE_CHECKING:
    from arrow_rl.routing.base import RequestRouter
    from envs.config import EnvConfig


class ClusterFactory(Protocol):
    def __call__(self, workload: Workload, config: "EnvConfig", router: "RequestRouter | None",
                 num_prefill: int, seed: int) -> Cluster:
        """A fresh cluster that will serve ``workload`` with ``num_prefill`` prefill instances."""
        ...


def emulator_config(config: "EnvConfig", num_prefill: int):
    """The ``EmulatorConfig`` an ``EnvConfig`` describes (``config.emulator`` adds/overrides fields)."""
    from arrow_rl.cluster.emulator import EmulatorConfig

    fields = dict(
        preset=config.preset,
        num_instances=config.num_instances,
        mode="disaggregated",
        num_prefill=num_prefill,
        max_num_batched_tokens=config.max_num_batched_tokens,
        max_num_seqs=config.max_num_seqs,
        slo_ttft_s=config.slo_ttft_s,
        slo_tpot_s=config.slo_tpot_s,
        flip_delay_s=config.flip_delay_s,
    )
    fields.update(config.emulator)
    if fields.get("num_mixed") and not config.action.three_roles:
        raise ValueError(f"env config: field 'emulator.num_mixed'={fields['num_mixed']!r}: the env's action codec "
                         "and observation know PREFILL and DECODE only (set action.kind 'moves' and observation.kind 'pools')")
    try:
        return EmulatorConfig(**fields)
    except Exception as exc:  # pydantic or dataclass error: say which env field fed it
        raise ValueError(f"env config: cannot build the emulator config from {sorted(fields)}: {exc}") from exc


def emulator_factory(workload: Workload, config: "EnvConfig", router: "RequestRouter | None",
                     num_prefill: int, seed: int) -> Cluster:
    """The default backend: the discrete-event emulator."""
    from arrow_rl.cluster.emulator import EmulatedCluster

    return EmulatedCluster(workload, emulator_config(config, num_prefill), router=router, seed=seed)
