"""The evaluation's one job loop (``arrow_rl.evaluation.jobs``): the same results in this process and
in worker processes, progress relayed from workers, a failing job named by its key; and the suite's
jobs receive a variant's speed-up and Arrow's constants on every backend's argument list."""

from __future__ import annotations

import pytest

from arrow_rl.evaluation.jobs import run_jobs


def square(k: int, notify) -> int:  # noqa: ANN001 - the loop's progress hook
    if notify is not None:
        notify(k, "ran")
    if k < 0:
        raise ValueError("negative")
    return k * k


@pytest.mark.parametrize("jobs", [1, 2])
def test_every_job_runs_once_and_its_progress_reaches_the_caller(jobs):
    seen: list[tuple] = []
    done: list = []
    out = run_jobs(square, [(k, (k,)) for k in range(4)], jobs=jobs, progress=lambda *item: seen.append(item),
                   on_done=lambda key, res: done.append((key, res)))
    assert out == {0: 0, 1: 1, 2: 4, 3: 9}
    assert sorted(seen) == [(k, "ran") for k in range(4)] and sorted(done) == sorted(out.items())


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failing_job_is_raised_as_described_with_its_key(jobs):
    with pytest.raises(ValueError, match=r"^job -1: negative$"):
        run_jobs(square, [(1, (1,)), (-1, (-1,))], jobs=jobs,
                 describe_error=lambda key, exc: ValueError(f"job {key}: {exc}"))


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of local, ray"):
        run_jobs(square, [(1, (1,))], backend="spark")


def test_suite_variants_reach_their_jobs():
    """An identical copy measures exactly what the controller does; a copy on instances twice as
    fast serves far more on every seed."""
    from arrow_rl.cluster.emulator import EmulatorConfig
    from arrow_rl.evaluation.protocol import Protocol
    from arrow_rl.evaluation.suite import Variant, run_suite
    from arrow_rl.evaluation.suite_spec import one_scenario_suite
    from arrow_rl.workload.generators import generate, parse_spec

    spec = parse_spec({"kind": "poisson", "rate": 4.0, "duration_s": 20,
                       "mix": {"input": {"kind": "fixed", "tokens": 4000}, "output": {"kind": "fixed", "tokens": 64}}})
    emu = EmulatorConfig(preset="h100-llama3.1-8b-tp1", num_instances=3, slo_ttft_s=2.0, slo_tpot_s=0.1)
    suite = one_scenario_suite(generate(spec, 0), emu, "poisson",
                               Protocol(warmup_s=2, span_s=15, seeds=(0, 1, 2), max_evals=8, rel_tol=0.3))
    res = run_suite(suite, ["static:1", "copy", "fast"], jobs=1,
                    variants={"copy": Variant("static:1"), "fast": Variant("static:1", 2.0)})
    (sc,) = res.scenarios.values()
    base, copy, fast = (sc.controllers[c].rates_by_seed() for c in ("static:1", "copy", "fast"))
    assert copy == base and all(fast[s] > 1.5 * base[s] for s in base)
