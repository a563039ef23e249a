"""The ``Controller`` interface: the instance-scheduling seat a learned agent takes.

Every control interval the loop hands the controller a ``ControlState`` (the metrics window of the
interval that just ended plus the current instance views) and applies the flips it returns. The
same object runs in ``arrow-rl evaluate``, inside ``PDClusterEnv`` and against a live cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

from arrow_rl.cluster.base import ClusterInfo, Flip, InstanceView, MetricsWindow


class ControllerMismatch(ValueError):
    """A controller that cannot run on this cluster (a checkpoint trained for fewer instances, or
    for another observation or action space). Raised by ``Controller.reset``; a suite reports the
    pair as not applicable rather than failing the whole run."""


@dataclass(frozen=True)
class ControlState:
    """What a controller observes at a decision point."""

    now: float
    window: MetricsWindow
    instances: Sequence[InstanceView]


@runtime_checkable
class Controller(Protocol):
    """Instance-scheduling policy: observes a ``ControlState``, returns role flips."""

    name: str

    def reset(self, info: ClusterInfo) -> None:
        """Called once before a run with the cluster's static description."""
        ...

    def act(self, state: ControlState) -> list[Flip]:
        """Flips to apply now (possibly none). Must not mutate ``state``."""
        ...
