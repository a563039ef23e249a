"""Request traces and synthetic workload generators."""

from arrow_rl.workload.workload import Request, Workload

__all__ = ["Request", "Workload"]
