"""The benchmarks' reference emulator (benchmarks/_reference_emulator.py) still runs against today's
modules: the speed benchmarks print their ratios against it, so an interface change that breaks it
should fail here, not in the next person's benchmark run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from arrow_rl.cluster.emulator import EmulatedCluster, EmulatorConfig
from arrow_rl.routing import make_router
from arrow_rl.workload.workload import Workload

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _reference_emulator  # noqa: E402


@pytest.mark.parametrize("mode", ["disaggregated", "colocated"])
def test_the_reference_emulator_serves_what_todays_serves(mode):
    reference = _reference_emulator.load()
    if reference is None:
        pytest.skip("no git history to extract the reference emulator from")
    rng = np.random.default_rng(0)
    wl = Workload(np.sort(rng.uniform(0, 20, 60)), rng.integers(50, 800, 60), rng.integers(5, 200, 60), name="probe")
    cfg = EmulatorConfig(preset="h100-llama3.1-8b-tp1", num_instances=4, mode=mode,
                         num_prefill=2 if mode == "disaggregated" else None)
    finished = []
    for cls in (reference.EmulatedCluster, EmulatedCluster):
        cluster = cls(wl, cfg, router=make_router("least-loaded"))
        cluster.run_until_done()
        finished.append(sum(r.finished for r in cluster.completed()))
    assert finished == [60, 60]
    with pytest.raises(NotImplementedError, match="predates"):
        reference.EmulatedCluster(wl, cfg, router=make_router("least-loaded")).flip_history()
