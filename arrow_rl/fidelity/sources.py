"""Recognise a real run on disk by its files and read it with the matching reader.

One path can be: an inference-perf run folder (``exp-config.yaml``), a per-request run folder
(``trace.csv``, ``requests.csv`` or ``requests.jsonl``, possibly under ``vllm/``), one
``vllm bench serve`` result file, a folder of such files (one run per load point), or an
aiconfigurator silicon table (``*.csv``, one run per vLLM row).
"""

from __future__ import annotations

from pathlib import Path

from arrow_rl.fidelity.bench_serve import bench_results_in, load_bench_result
from arrow_rl.fidelity.request_runs import is_per_request_run, load_per_request_run
from arrow_rl.fidelity.runs import RealRun, RunFormatError, load_run
from arrow_rl.fidelity.silicon_points import is_silicon_table, load_silicon_points
from arrow_rl.fidelity.trace_run import TraceRun


def load_runs(path: str | Path) -> list[RealRun | TraceRun]:
    """Every run at ``path`` (module docstring); :class:`RunFormatError` says what was expected."""
    p = Path(path)
    if p.is_file():
        if p.suffix == ".json":
            return [load_bench_result(p)]
        if is_silicon_table(p):
            return load_silicon_points(p)
        raise RunFormatError(f"{p}: not a run: expected a vllm bench serve result (*.json), an aiconfigurator "
                             f"silicon table (*.csv) or a run folder")
    if not p.is_dir():
        raise RunFormatError(f"{p}: no such file or directory")
    if (p / "exp-config.yaml").is_file():
        return [load_run(p)]
    if is_per_request_run(p):
        return [load_per_request_run(p)]
    if is_per_request_run(p / "vllm"):
        return [load_per_request_run(p / "vllm")]
    results = bench_results_in(p)
    if results:
        return [load_bench_result(f) for f in results]
    raise RunFormatError(f"{p}: not a run folder: expected exp-config.yaml (inference-perf), trace.csv, "
                         f"requests.csv or requests.jsonl (per request), or vllm bench serve *.json files")


__all__ = ["load_runs"]
