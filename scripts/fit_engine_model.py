#!/usr/bin/env python
"""Fit the engine model's global constants end to end on real vLLM serving runs.

Developer tool. Replays every unsaturated stage of the given runs (any format ``arrow-rl fidelity``
reads) with candidate constants and minimises the squared log error of the mean TTFT and TPOT.
One set of constants for every preset: the presets differ only in model shape, TP and GPU peaks.
Writes ``--out`` (default ``arrow_rl/perf/data/engine.json``; write a candidate elsewhere).

Usage: ``python scripts/fit_engine_model.py RUN... [--duration 90] [--iters 400] [--free-attn]
[--leave-out REGEX] [--max-concurrency N] [--test RUN...] [--out FILE]``

``--leave-out`` drops the runs of the models it matches from the fit (leave-one-model-out);
``--test`` replays other runs with the fitted constants afterwards and prints their median errors.
Only calibration runs may be passed here; runs kept aside to test the model must never be.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from arrow_rl.fidelity.report import compare_runs, resolve_preset
from arrow_rl.fidelity.sources import load_runs
from arrow_rl.fidelity.trace_run import TraceRun, UnsupportedRun
from arrow_rl.perf.engine import EngineConstants, EngineLatencyModel, engine_constants
from arrow_rl.perf.presets import get_preset, load_preset_document

# Fitted in log space; the rest stay at their documented values.
FREE = ("bw_efficiency", "kv_bw_efficiency", "flops_efficiency", "moe_bw_efficiency", "moe_flops_efficiency",
        "smooth_p",
        "step_overhead_s", "layer_overhead_s", "seq_overhead_s", "frontend_s")
UPPER = {"bw_efficiency": 0.95, "kv_bw_efficiency": 0.95, "flops_efficiency": 0.95, "moe_bw_efficiency": 1.0,
         "moe_flops_efficiency": 1.0, "attn_efficiency": 0.95}
W_TTFT, W_TPOT = 1.0, 2.0


def _load(paths: list[Path], leave_out: str | None, max_concurrency: int | None) -> list:
    runs = []
    for path in paths:
        try:
            loaded = load_runs(path)
        except UnsupportedRun as exc:
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
                print(f"skipped: {exc}")
                continue
            runs.append(run)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of each stage replayed")
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--free-attn", action="store_true", help="also fit attn_efficiency (prefill attention)")
    ap.add_argument("--leave-out", default=None, help="leave the runs of models matching this regex out")
    ap.add_argument("--max-concurrency", type=int, default=None, help="leave closed-loop runs above N out")
    ap.add_argument("--test", nargs="*", type=Path, default=[], help="runs to replay with the fitted constants")
    ap.add_argument("--constants", type=Path, default=None,
                    help="start from these constants (an engine.json-shaped file); with --iters 0: only evaluate")
    ap.add_argument("--out", type=Path, default=Path("arrow_rl/perf/data/engine.json"))
    args = ap.parse_args()
    free = FREE + (("attn_efficiency",) if args.free_attn else ())
    runs = _load(args.runs, args.leave_out, args.max_concurrency)
    # Saturated stages are left out: their latency is set by the client's time-outs and the abort of
    # requests mid-decode as much as by the engine; they are judged on throughput (arrow-rl fidelity).
    n_stages = sum(not st.saturated for run in runs for st in run.stages)
    print(f"fitting on {n_stages} unsaturated stages of {len(runs)} runs")
    base = engine_constants()
    if args.constants is not None:
        given = json.loads(args.constants.read_text())["constants"]
        base = dataclasses.replace(base, **{k: float(given[k]) for k in given if k != "source"})
    x0 = np.log([getattr(base, k) for k in free])

    def constants(x: np.ndarray) -> EngineConstants:
        vals = {k: float(math.exp(v)) for k, v in zip(free, x)}
        for k, hi in UPPER.items():
            if k in vals:
                vals[k] = min(vals[k], hi)
        vals["smooth_p"] = max(vals["smooth_p"], 1.0)
        return dataclasses.replace(base, **vals)

    best = [math.inf, x0]

    def presets_for(c: EngineConstants):
        cache: dict = {}

        def build(name: str):
            if name not in cache:
                cache[name] = dataclasses.replace(get_preset(name),
                                                  latency=EngineLatencyModel(load_preset_document(name), c))
            return cache[name]
        return build

    def loss(x: np.ndarray, show: bool = False) -> float:
        c = constants(x)
        rep = compare_runs(runs, seed=0, duration_s=args.duration, build_preset=presets_for(c))
        total = 0.0
        for s in rep.stages:
            if s.saturated:
                continue
            real, sim = s.real, s.sim
            if not (math.isfinite(sim.tpot_mean) and sim.ttft_mean > 0):
                return 1e6
            if real.tpot_mean > 0:
                total += W_TPOT * math.log(sim.tpot_mean / real.tpot_mean) ** 2
            # A closed loop's TTFT depends on the clients' phase (identical requests replayed on a
            # deterministic engine stay in lockstep; real clients drift apart): TPOT only there.
            if getattr(real, "concurrency", None) is None:
                total += W_TTFT * math.log(sim.ttft_mean / real.ttft_mean) ** 2
            if show:
                print(f"  {s.run[-40:]:40s} TTFT {real.ttft_mean * 1e3:8.1f} {sim.ttft_mean * 1e3:8.1f} ms"
                      f"  TPOT {real.tpot_mean * 1e3:6.2f} {sim.tpot_mean * 1e3:6.2f} ms")
        if total < best[0]:
            best[:] = [total, x]
        return total

    t0 = time.time()
    print(f"start loss {loss(x0):.4f}")
    evals = [0]

    def logged(x: np.ndarray) -> float:
        val = loss(x)
        evals[0] += 1
        if evals[0] % 50 == 0:
            print(f"eval {evals[0]}: loss {val:.4f} best {best[0]:.4f} "
                  + " ".join(f"{k}={v:.4g}" for k, v in dataclasses.asdict(constants(best[1])).items()
                             if k in FREE), flush=True)
        return val

    if args.iters > 0:
        res = minimize(logged, x0, method="Nelder-Mead", options={"maxiter": args.iters, "xatol": 1e-3,
                                                                   "fatol": 1e-5})
        print(f"end loss {res.fun:.4f} after {res.nit} iterations, {time.time() - t0:.0f} s")
    c = constants(best[1])
    loss(best[1], show=True)
    models = sorted({r.model for r in runs})
    doc = {"constants": {k: v for k, v in dataclasses.asdict(c).items() if k != "source"},
           "source": (f"fitted end to end by scripts/fit_engine_model.py on {n_stages} unsaturated stages of "
                      f"real vLLM runs of {', '.join(models)}; free: {', '.join(free)}"
                      + (f"; left out: models matching {args.leave_out!r}" if args.leave_out else "")),
           "fitted_on": [r.name for r in runs]}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc["constants"], indent=1))
    for path in args.test:   # one line per test path: its own median errors
        rep = compare_runs(_load([path], None, None), seed=0, build_preset=presets_for(c), skip_unsupported=True)
        med = rep.median_ape()
        sat = rep.saturated_throughput_ape()
        print(f"test {path}: {sum(not s.saturated for s in rep.stages)} unsaturated stages, median APE "
              f"e2e {med['e2e']:.1f}% TPOT {med['tpot']:.1f}% TTFT {med['ttft']:.1f}%; {len(sat)} saturated, "
              f"throughput APE median {float(np.median(sat)) if sat else float('nan'):.1f}%")


if __name__ == "__main__":
    main()
