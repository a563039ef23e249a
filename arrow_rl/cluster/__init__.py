"""Backend-neutral cluster interface (``base``) and its backends (``emulator``, ``live``)."""

from arrow_rl.cluster.base import (
    SLO, Cluster, ClusterInfo, Flip, InstanceView, InstanceWindowStats, MetricsWindow, Mode,
    PoolStats, RequestRecord, Role,
)

__all__ = [
    "SLO", "Cluster", "ClusterInfo", "Flip", "InstanceView", "InstanceWindowStats", "MetricsWindow",
    "Mode", "PoolStats", "RequestRecord", "Role",
]
