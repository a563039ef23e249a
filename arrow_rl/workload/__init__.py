"""Request traces and synthetic workload generators."""

from arrow_rl.workload.bundled import load_bundled
from arrow_rl.workload.generators import GeneratorSpec, generate, load_spec, parse_spec
from arrow_rl.workload.loaders import TraceFormatError, TraceReport, detect_format, load_trace, load_workload
from arrow_rl.workload.stats import WorkloadStats, summarize
from arrow_rl.workload.trace_paths import bundled_trace_names, bundled_trace_path
from arrow_rl.workload.workload import Request, Workload

__all__ = [
    "GeneratorSpec",
    "Request",
    "TraceFormatError",
    "TraceReport",
    "Workload",
    "WorkloadStats",
    "bundled_trace_names",
    "bundled_trace_path",
    "detect_format",
    "generate",
    "load_bundled",
    "load_spec",
    "load_trace",
    "load_workload",
    "parse_spec",
    "summarize",
]
