"""The suite's power check: can the protocol see a difference that exists by construction?

A controller is run twice on every scenario of a suite: as itself, and on instances ``speedup``
times faster (``Preset.sped_up``: every engine iteration, the API server and KV transfers), which
serves more by construction; a third copy on the very same instances must tie. The check reports,
per scenario, the paired ratio of the faster copy to the original with its verdict, and whether the
identical copy was called anything but a tie (a false win or loss). ``arrow-rl suite power`` runs it;
``docs/evaluation.md`` keeps the measured power and the smallest difference resolved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from arrow_rl.evaluation.paired import Paired, call_verdicts
from arrow_rl.evaluation.suite import SuiteResult, Variant, run_suite
from arrow_rl.evaluation.suite_spec import Suite


@dataclass
class PowerResult:
    controller: str
    speedup: float
    faster: dict[str, Paired]       # scenario -> the faster copy against the controller
    identical: dict[str, Paired]    # scenario -> the identical copy against the controller
    result: SuiteResult

    @property
    def power(self) -> float:
        """Fraction of scenarios where the faster copy is called a win."""
        return sum(p.verdict == "win" for p in self.faster.values()) / max(1, len(self.faster))

    @property
    def false_calls(self) -> int:
        """Scenarios where the identical copy was called a win or a loss."""
        return sum(p.verdict != "tie" for p in self.identical.values())


def power_check(suite: Suite, controller: str = "arrow", speedup: float = 1.05, *, jobs: int = 1,
                on_job_done: Callable[[str, str, float], None] | None = None) -> PowerResult:
    """Run ``controller``, its faster copy and an identical copy on ``suite``; call the verdicts with
    Holm across all of the suite's scenarios (one family per copy)."""
    faster, same = f"{controller}@x{speedup:g}", f"{controller}@copy"
    result = run_suite(suite, [controller, faster, same], jobs=jobs, on_job_done=on_job_done,
                       variants={faster: Variant(controller, speedup), same: Variant(controller)})
    names = list(result.scenarios)
    out = {}
    for copy in (faster, same):
        raw = [result.scenarios[n].raw_pair(copy, controller) for n in names]
        out[copy] = dict(zip(names, call_verdicts(raw)))
    return PowerResult(controller, speedup, out[faster], out[same], result)
