"""The lookahead planners' golden set: the clairvoyant oracle's decisions and the env teachers' labels
on small deterministic cases, pinned exactly.

The ``oracle`` controller and the env-side teachers (``oracle-moves``, ``oracle-split``) all plan
with the what-if planner (``arrow_rl.controllers.whatif``): clone the cluster, apply a candidate,
run a horizon, score it. These cases pin what each one decides, so a change to the planner, its
tie-breaks or its candidates shows up here. ``tests/test_whatif.py`` re-runs the cases and
compares with ``whatif_golden.json``. Regenerate only for an intended change of behaviour, in its
own commit that says why:

    python tests/golden/make_whatif_golden.py            # rewrite tests/golden/whatif_golden.json
    python tests/golden/make_whatif_golden.py --check    # compare only (what the test does)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

from arrow_rl.cluster.emulator import EmulatorConfig
from arrow_rl.controllers.baselines import OracleConfig
from arrow_rl.controllers.registry import make_policy
from arrow_rl.evaluation.runner import run_policy
from arrow_rl.workload import load_workload
from arrow_rl.workload.generators import generate

GOLDEN = Path(__file__).with_name("whatif_golden.json")
PRESET = "h100-llama3.1-8b-tp1"


# ----------------------------------------------------------------------------------------- oracle
class _Recording:
    """Wraps a controller and keeps every ``act`` answer (time and flips), no-ops included."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.decisions: list[list[Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def reset(self, info) -> None:
        self.inner.reset(info)

    def bind_cluster(self, cluster) -> None:
        self.inner.bind_cluster(cluster)

    def act(self, state) -> list:
        flips = self.inner.act(state)
        self.decisions.append([repr(state.now), [[f.instance_id, f.role.value] for f in flips]])
        return flips


def _oracle_case(workload, n: int, use_mixed: bool | None, **knobs) -> dict:
    cfg = EmulatorConfig(preset=PRESET, num_instances=n, slo_ttft_s=1.0, slo_tpot_s=0.05)
    policy = make_policy("oracle", n, oracle_config=OracleConfig(use_mixed=use_mixed, **knobs))
    recorder = _Recording(policy.controller)
    policy.controller = recorder
    result = run_policy(workload, cfg, policy)
    return {"decisions": [d for d in recorder.decisions if d[1]], "acts": len(recorder.decisions),
            "evaluations": recorder.inner.evaluations, "attainment": repr(result.attainment),
            "flips": [[repr(f.time_s), f.instance_id, f.role] for f in result.flips]}


def _azure(start: float, end: float, scale: float):
    return load_workload("azure-conv").window(start, end).scaled(scale)


def oracle_azure_pd() -> dict:
    return _oracle_case(_azure(0, 360, 12.0), 4, False, decision_interval_s=3.0, lookahead_s=6.0, max_step=2)


def oracle_azure_mixed() -> dict:
    return _oracle_case(_azure(0, 360, 12.0), 4, None, decision_interval_s=3.0, lookahead_s=6.0, max_step=2)


def oracle_generator_mixed() -> dict:
    w = generate({"kind": "poisson", "rate": 60.0, "duration_s": 20.0,
                  "mix": {"input": {"kind": "lognormal", "mean": 1500, "cv": 0.8, "max_tokens": 8000},
                          "output": {"kind": "lognormal", "mean": 300, "cv": 0.8, "max_tokens": 2000}}}, seed=5)
    return _oracle_case(w, 5, True, decision_interval_s=2.0, lookahead_s=4.0, max_step=2)


# --------------------------------------------------------------------------------------- teachers
_SMALL_ENV = {"action": {"kind": "moves"}, "observation": {"kind": "pools"}, "preset": "h100-llama3.1-70b-tp4",
              "slo_ttft_s": 10.0, "slo_tpot_s": 0.125}


def _scores(scores) -> list | None:
    return None if scores is None else [None if math.isnan(x) else repr(float(x)) for x in scores]


def _teacher_episode(config: dict, seed: int, with_target: bool) -> dict:
    from envs import PDClusterEnv

    env = PDClusterEnv(config)
    _obs, info = env.reset(seed=seed)
    steps = []
    while True:
        step = [info["teacher_action"], _scores(info.get("teacher_scores"))]
        if with_target:
            step.append(list(env.teacher.target) if env.teacher.target is not None else None)
        steps.append(step)
        _obs, _r, term, trunc, info = env.step(info["teacher_action"])
        if term or trunc:
            return {"steps": steps, "evaluations": env.teacher.evaluations,
                    "flip_count": info["episode_stats"]["flip_count"]}


def moves_teacher_code() -> dict:
    return _teacher_episode({**_SMALL_ENV, "num_instances": 6, "initial_prefill": 1, "teacher": "oracle-moves",
                             "teacher_config": {"candidate_fractions": [0.25], "lookahead_s": 10.0},
                             "episode": {"traces": ["azure-code"], "duration_s": 16, "drain_s": 2,
                                         "rate_scale": [10.0, 10.0]}}, seed=0, with_target=False)


def moves_teacher_conv() -> dict:
    return _teacher_episode({**_SMALL_ENV, "num_instances": 5, "teacher": "oracle-moves",
                             "teacher_config": {"lookahead_s": 8.0, "decision_interval_s": 3.0},
                             "episode": {"traces": ["azure-conv"], "duration_s": 15, "drain_s": 2,
                                         "rate_scale": [8.0, 8.0]}}, seed=1, with_target=False)


def _split_case(trace: str, rate_scale: float) -> dict:
    return _teacher_episode({**_SMALL_ENV, "num_instances": 6, "initial_prefill": 3, "teacher": "oracle-split",
                             "teacher_config": {"horizon_s": 10.0, "replan_s": 8.0, "grid": 4},
                             "episode": {"traces": [trace], "duration_s": 20, "drain_s": 2,
                                         "rate_scale": [rate_scale, rate_scale]}}, seed=2, with_target=True)


def split_teacher_code() -> dict:
    return _split_case("azure-code", 10.0)


def split_teacher_conv() -> dict:
    return _split_case("azure-conv", 16.0)


CASES: dict[str, Callable[[], dict]] = {
    "oracle_azure_pd": oracle_azure_pd,
    "oracle_azure_mixed": oracle_azure_mixed,
    "oracle_generator_mixed": oracle_generator_mixed,
    "moves_teacher_code": moves_teacher_code,
    "moves_teacher_conv": moves_teacher_conv,
    "split_teacher_code": split_teacher_code,
    "split_teacher_conv": split_teacher_conv,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed file instead of writing it")
    args = ap.parse_args(argv)
    got = {name: case() for name, case in CASES.items()}
    if args.check:
        want = json.loads(GOLDEN.read_text())
        bad = sorted(name for name in CASES if got[name] != want.get(name))
        print("all match" if not bad else f"differ: {bad}")
        return 1 if bad else 0
    GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
