"""Real traces shipped inside the package, loaded by their short names (``load_bundled("azure-conv")``).

Which traces there are and where their files lie is trace_paths.py's business (its names are
importable from here too); this module adds loading one by name with its format.
"""

from __future__ import annotations

from arrow_rl.workload.loaders import load_workload
from arrow_rl.workload.trace_paths import BUNDLED_TRACES, bundled_trace_names, bundled_trace_path
from arrow_rl.workload.workload import Workload

__all__ = ["BUNDLED_TRACES", "bundled_trace_names", "bundled_trace_path", "load_bundled"]


def load_bundled(name: str) -> Workload:
    """Load a bundled trace by name (``azure-code``, ``azure-conv``, ``mooncake``)."""
    return load_workload(bundled_trace_path(name), format=BUNDLED_TRACES[name][1], name=name)
