"""The switch between the emulator's fast paths and its reference path.

The fast paths compute exactly what the reference path computes, with less work: e.g. a cluster
whose router is the plain ``LeastLoadedRouter`` routes each request leg from the instances' running
sums instead of building every instance's ``InstanceView`` for the router (cluster.py,
``_least_loaded_prefill``). Records, windows and views are bit-identical either way (the golden
set, tests/test_emulator_golden.py, runs both).

``ARROW_EMULATOR_REFERENCE=1`` in the environment selects the reference path for every cluster
built afterwards; tests and benchmarks flip ``ENABLED`` instead. A cluster reads the switch once,
when it is built (a clone keeps its original's choice).
"""

from __future__ import annotations

import os

ENABLED: bool = os.environ.get("ARROW_EMULATOR_REFERENCE", "").strip().lower() in ("", "0", "false", "no")
