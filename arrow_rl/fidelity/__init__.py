"""End-to-end fidelity: replay real vLLM serving runs through the emulator and report the error.

``runs`` reads inference-perf run folders, ``replay`` rebuilds each stage's workload and runs it on
one emulated instance with the run's knobs, ``report`` compares the means and prints/plots them.
"""

from arrow_rl.fidelity.report import FidelityReport, StageResult, compare_runs
from arrow_rl.fidelity.runs import RealRun, RealStage, RunFormatError, load_run

__all__ = ["FidelityReport", "RealRun", "RealStage", "RunFormatError", "StageResult", "compare_runs",
           "load_run"]
