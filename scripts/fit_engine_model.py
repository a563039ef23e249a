#!/usr/bin/env python
"""Fit the engine model's global constants end to end on real vLLM serving runs.

Developer tool. Replays every unsaturated stage of the given runs (any format ``arrow-rl fidelity``
reads) with candidate constants and minimises the squared log error of the mean TTFT and TPOT.
One set of constants for every preset: the presets differ only in model shape, TP and GPU peaks.
Writes ``--out`` (default ``arrow_rl/perf/data/engine.json``; write a candidate elsewhere).

Usage: ``python scripts/fit_engine_model.py RUN... [--duration 60] [--iters 400] [--free-attn]
[--fixed NAME...] [--leave-out REGEX] [--max-concurrency N] [--test RUN...] [--out FILE]``

``--leave-out`` drops the runs of the models it matches from the fit (leave-one-model-out);
``--test`` replays other runs with the fitted constants afterwards and prints their median errors.
``scripts/lomo_report.py`` runs the whole leave-one-model-out protocol with the functions below.
Only calibration runs may be passed here; runs kept aside to test the model must never be.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import minimize

from arrow_rl.fidelity.report import FidelityReport, compare_runs, resolve_preset
from arrow_rl.fidelity.sources import load_runs
from arrow_rl.fidelity.trace_run import TraceRun, UnsupportedRun
from arrow_rl.perf.engine import EngineConstants, EngineLatencyModel, engine_constants
from arrow_rl.perf.presets import get_preset, load_preset_document, resolve_preset_name

# Fitted in log space; the rest stay at their documented values.
FREE = ("bw_efficiency", "kv_bw_efficiency", "flops_efficiency", "moe_bw_efficiency", "moe_flops_efficiency",
        "smooth_p",
        "step_overhead_s", "layer_overhead_s", "seq_overhead_s", "frontend_s")
UPPER = {"bw_efficiency": 0.95, "kv_bw_efficiency": 0.95, "flops_efficiency": 0.95, "moe_bw_efficiency": 1.0,
         "moe_flops_efficiency": 1.0, "attn_efficiency": 0.95}
W_TTFT, W_TPOT = 1.0, 2.0


def load_fit_runs(paths: Sequence[Path], leave_out: str | None = None,
                  max_concurrency: int | None = None, quiet: bool = False) -> list:
    """The runs under ``paths`` that a preset can replay, less the left-out models and big closed loops."""
    runs = []
    for path in paths:
        try:
            loaded = load_runs(path)
        except UnsupportedRun as exc:
            if not quiet:
                print(f"skipped: {exc}")
            continue
        for run in loaded:
            if leave_out and re.search(leave_out, run.model, re.IGNORECASE):
                continue
            if max_concurrency and isinstance(run, TraceRun) and (run.concurrency or 0) > max_concurrency:
                continue
            try:
                resolve_preset(run, None)
            except ValueError as exc:
                if not quiet:
                    print(f"skipped: {exc}")
                continue
            runs.append(run)
    return runs


def dedupe(runs: list) -> list:
    """One run per identical measurement (aiconfigurator lists some points twice); they would only weigh double."""
    seen, out = set(), []
    for run in runs:
        if isinstance(run, TraceRun):
            st = run.stage
            key = (run.model, run.tensor_parallelism, run.concurrency, round(st.ttft_mean, 6), round(st.tpot_mean, 6))
            if key in seen:
                continue
            seen.add(key)
        out.append(run)
    return out


def presets_for(c: EngineConstants) -> Callable[[str], object]:
    """A preset builder that times every preset with the constants ``c`` (cached per name)."""
    cache: dict = {}

    def build(name: str):
        if name not in cache:
            cache[name] = dataclasses.replace(get_preset(name),
                                              latency=EngineLatencyModel(load_preset_document(name), c))
        return cache[name]
    return build


def replay(runs: Sequence, c: EngineConstants, duration_s: float | None = None, skip_unsupported: bool = False,
           preset: str | None = None) -> FidelityReport:
    """``arrow-rl fidelity --engine-constants`` in process: ``preset`` is a name or a preset YAML file."""
    name = resolve_preset_name(preset) if preset is not None else None
    return compare_runs(runs, preset=name, seed=0, duration_s=duration_s, build_preset=presets_for(c),
                        skip_unsupported=skip_unsupported)


def stage_loss(report: FidelityReport, show: bool = False) -> tuple[float, int]:
    """Sum of weighted squared log errors of the mean TTFT and TPOT over unsaturated stages, and their count.

    Saturated stages are left out: their latency is set by the client's time-outs and the abort of
    requests mid-decode as much as by the engine; they are judged on throughput (arrow-rl fidelity).
    A closed loop's TTFT depends on the clients' phase (identical requests replayed on a deterministic
    engine stay in lockstep; real clients drift apart): TPOT only there."""
    total, n = 0.0, 0
    for s in report.stages:
        if s.saturated:
            continue
        real, sim = s.real, s.sim
        if not (math.isfinite(sim.tpot_mean) and sim.ttft_mean > 0):
            return 1e6, 1
        n += 1
        if real.tpot_mean > 0:
            total += W_TPOT * math.log(sim.tpot_mean / real.tpot_mean) ** 2
        if getattr(real, "concurrency", None) is None:
            total += W_TTFT * math.log(sim.ttft_mean / real.ttft_mean) ** 2
        if show:
            print(f"  {s.run[-40:]:40s} TTFT {real.ttft_mean * 1e3:8.1f} {sim.ttft_mean * 1e3:8.1f} ms"
                  f"  TPOT {real.tpot_mean * 1e3:6.2f} {sim.tpot_mean * 1e3:6.2f} ms")
    return total, n


def model_loss(runs: Sequence, c: EngineConstants, duration_s: float | None, show: bool = False) -> float:
    """Mean stage loss per model, summed over models: each model weighs the same whatever its number of
    stages, so the many aiconfigurator points of one model do not drown the others."""
    by_model: dict[str, list] = defaultdict(list)
    for run in runs:
        by_model[run.model].append(run)
    total = 0.0
    for group in by_model.values():
        loss, n = stage_loss(replay(group, c, duration_s), show)
        total += loss / max(n, 1)
    return total


def fit_constants(runs: Sequence, base: EngineConstants, free: Sequence[str], iters: int,
                  duration_s: float | None, log: Callable[[str], None] = print) -> EngineConstants:
    """Nelder-Mead on the log of the ``free`` constants from ``base``; the best point seen."""
    x0 = np.log([getattr(base, k) for k in free])

    def constants(x: np.ndarray) -> EngineConstants:
        vals = {k: float(math.exp(v)) for k, v in zip(free, x)}
        for k, hi in UPPER.items():
            if k in vals:
                vals[k] = min(vals[k], hi)
        if "smooth_p" in vals:
            vals["smooth_p"] = max(vals["smooth_p"], 1.0)
        return dataclasses.replace(base, **vals)

    best = [math.inf, x0]
    evals = [0]
    t0 = time.time()

    def loss(x: np.ndarray) -> float:
        val = model_loss(runs, constants(x), duration_s)
        if val < best[0]:
            best[:] = [val, x]
        evals[0] += 1
        if evals[0] == 1 or evals[0] % 25 == 0:
            log(f"eval {evals[0]} ({time.time() - t0:.0f} s): loss {val:.4f} best {best[0]:.4f} "
                + " ".join(f"{k}={getattr(constants(best[1]), k):.4g}" for k in free))
        return val

    if iters > 0:
        minimize(loss, x0, method="Nelder-Mead",
                 options={"maxiter": iters, "maxfev": iters, "xatol": 1e-3, "fatol": 1e-5})
    else:
        loss(x0)
    return constants(best[1])


def constants_doc(c: EngineConstants, source: str, fitted_on: Sequence[str]) -> dict:
    return {"constants": {k: v for k, v in dataclasses.asdict(c).items() if k != "source"},
            "source": source, "fitted_on": list(fitted_on)}


def read_constants(path: Path, base: EngineConstants | None = None) -> EngineConstants:
    """Constants from an engine.json-shaped file, over ``base`` (the shipped ones) for any it omits."""
    given = json.loads(path.read_text())["constants"]
    base = base or engine_constants()
    return dataclasses.replace(base, **{k: float(given[k]) for k in given if k != "source"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of each stage replayed")
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--free-attn", action="store_true", help="also fit attn_efficiency (prefill attention)")
    ap.add_argument("--fixed", nargs="*", default=[], help="constants to keep at their start value")
    ap.add_argument("--leave-out", default=None, help="leave the runs of models matching this regex out")
    ap.add_argument("--max-concurrency", type=int, default=None, help="leave closed-loop runs above N out")
    ap.add_argument("--test", nargs="*", type=Path, default=[], help="runs to replay with the fitted constants")
    ap.add_argument("--constants", type=Path, default=None,
                    help="start from these constants (an engine.json-shaped file); with --iters 0: only evaluate")
    ap.add_argument("--out", type=Path, default=Path("arrow_rl/perf/data/engine.json"))
    args = ap.parse_args()
    free = tuple(k for k in FREE + (("attn_efficiency",) if args.free_attn else ()) if k not in args.fixed)
    runs = dedupe(load_fit_runs(args.runs, args.leave_out, args.max_concurrency))
    n_stages = sum(not st.saturated for run in runs for st in run.stages)
    print(f"fitting on {n_stages} unsaturated stages of {len(runs)} runs")
    base = read_constants(args.constants) if args.constants is not None else engine_constants()
    t0 = time.time()
    c = fit_constants(runs, base, free, args.iters, args.duration)
    print(f"fit done in {time.time() - t0:.0f} s; final loss {model_loss(runs, c, args.duration, show=True):.4f}")
    models = sorted({r.model for r in runs})
    doc = constants_doc(c, f"fitted end to end by scripts/fit_engine_model.py on {n_stages} unsaturated stages of "
                           f"real vLLM runs of {', '.join(models)}; free: {', '.join(free)}"
                           + (f"; left out: models matching {args.leave_out!r}" if args.leave_out else ""),
                        [r.name for r in runs])
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc["constants"], indent=1))
    for path in args.test:   # one line per test path: its own median errors
        rep = replay(load_fit_runs([path]), c, skip_unsupported=True)
        med = rep.median_ape()
        sat = rep.saturated_throughput_ape()
        print(f"test {path}: {sum(not s.saturated for s in rep.stages)} unsaturated stages, median APE "
              f"e2e {med['e2e']:.1f}% TPOT {med['tpot']:.1f}% TTFT {med['ttft']:.1f}%; {len(sat)} saturated, "
              f"throughput APE median {float(np.median(sat)) if sat else float('nan'):.1f}%")


if __name__ == "__main__":
    main()
