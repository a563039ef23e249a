"""End-to-end fidelity: replay real vLLM serving runs through the emulator and report the error.

``sources`` recognises a run on disk and reads it: inference-perf folders (``runs``), per-request
runs (``request_runs``), ``vllm bench serve`` results (``bench_serve``) and aiconfigurator points
(``silicon_points``). ``replay`` rebuilds an inference-perf stage, ``trace_replay`` any other run
(open or closed loop, colocated or disaggregated), on the emulator; ``report`` compares the means
and prints/plots them; ``calibration`` is the in-sample error on the shipped calibration runs.
"""

from arrow_rl.fidelity.report import FidelityReport, StageResult, compare_runs
from arrow_rl.fidelity.runs import RealRun, RealStage, RunFormatError, load_run
from arrow_rl.fidelity.sources import load_runs
from arrow_rl.fidelity.trace_run import TraceRun, TraceStage, UnsupportedRun

__all__ = ["FidelityReport", "RealRun", "RealStage", "RunFormatError", "StageResult", "TraceRun", "TraceStage",
           "UnsupportedRun", "compare_runs", "load_run", "load_runs"]
