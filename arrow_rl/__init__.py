"""arrow-rl: adaptive prefill/decode instance scheduling (Arrow, arXiv 2505.11916) as an RL problem.

Sub-packages, one job each (see ARCHITECTURE in the README):

* ``arrow_rl.workload``   request traces and synthetic generators
* ``arrow_rl.perf``       calibrated latency model and cluster presets
* ``arrow_rl.cluster``    the backend-neutral ``Cluster`` interface, the emulator and the live backend
* ``arrow_rl.routing`` per-request routers (Arrow Algorithm 1, round-robin, least-loaded)
* ``arrow_rl.control``    the ``Controller`` interface every instance-scheduling policy implements
* ``arrow_rl.controllers`` heuristic controllers (Arrow Algorithms 2+3, static, colocated, Dynamo, oracle)
* ``arrow_rl.metrics``    TTFT/TPOT summaries, SLO attainment
* ``arrow_rl.evaluation`` serving rate (Arrow §6.1) under the suite protocol, scenario suites, leaderboards
"""

__version__ = "0.1.0"
