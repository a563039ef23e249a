#!/usr/bin/env python
"""Leave-one-model-out (LOMO) errors of the engine model: fit without a model, replay that model.

Developer tool. The datasets come from a JSON manifest (the real runs are public but not shipped)::

    {"calibration": {"paths": ["vllm_h100_e2e/*codellama*", "vllm_h100_e2e/*mixtral*"], "fit": true},
     "llama31": {"paths": [".../colocated_*.json"], "preset": "l40s-llama3.1-8b-tp1.yaml"}, ...}

Paths are globs relative to the manifest's folder. ``fit: true`` datasets feed the fits (unsaturated
stages, closed loops up to ``--max-concurrency``); the others are only replayed. Fits: one on every
fit model ("refit", in-sample for those models) and one per fit model without its runs (LOMO). Each
fit is cached as ``FITS/<label>.json`` so the fits can run as separate processes (``--fit LABEL``);
without ``--fit`` the missing fits run in turn and the table is printed. A run is replayed for the
LOMO column with the constants fitted without its model; a model that no fit saw (another GPU, a
hypothetical preset) gets the refit there too, already out of sample.

Usage: ``python scripts/lomo_report.py MANIFEST --fits DIR [--baseline FILE] [--fit LABEL]
[--iters 250] [--duration 60] [--json OUT]``
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit_engine_model import (constants_doc, dedupe, fit_constants, load_fit_runs, read_constants,  # noqa: E402
                              replay)

from arrow_rl.fidelity.report import FidelityReport  # noqa: E402
from arrow_rl.fidelity.sources import load_runs  # noqa: E402
from arrow_rl.fidelity.trace_run import UnsupportedRun  # noqa: E402
from arrow_rl.perf.engine import EngineConstants, engine_constants  # noqa: E402

# Fitted by default: every efficiency (prefill attention included) and the per-step, per-sequence and
# per-request costs. smooth_p and the per-layer overhead stay at their calibrated values: they are
# nearly collinear with the flops efficiency and the per-step cost across the models we have.
FREE = ("bw_efficiency", "kv_bw_efficiency", "flops_efficiency", "attn_efficiency", "moe_bw_efficiency",
        "moe_flops_efficiency", "step_overhead_s", "seq_overhead_s", "frontend_s")


def label(model: str) -> str:
    return "without-" + re.sub(r"[^a-z0-9.]+", "-", model.lower()).strip("-")


def expand(manifest: Path, patterns: list[str]) -> list[Path]:
    out: list[Path] = []
    for pat in patterns:
        hits = sorted(glob.glob(str(manifest.parent / pat)))
        if not hits:
            raise SystemExit(f"{manifest}: {pat!r} matches nothing")
        out += [Path(h) for h in hits]
    return out


def fit_runs(manifest: Path, spec: dict, max_concurrency: int) -> list:
    paths = [p for d in spec.values() if d.get("fit") for p in expand(manifest, d["paths"])]
    return dedupe(load_fit_runs(paths, max_concurrency=max_concurrency, quiet=True))


def get_fit(fits: Path, name: str, runs: list, base: EngineConstants, args: argparse.Namespace) -> EngineConstants:
    """The cached fit ``name`` or a fresh one on ``runs`` (the refit, or all but one model's)."""
    path = fits / f"{name}.json"
    if path.exists():
        return read_constants(path)
    n = sum(not st.saturated for r in runs for st in r.stages)
    print(f"[{name}] fitting on {n} unsaturated stages of {len(runs)} runs", flush=True)
    c = fit_constants(runs, base, args.free, args.iters, args.duration,
                      log=lambda s: print(f"[{name}] {s}", flush=True))
    models = sorted({r.model for r in runs})
    fits.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(constants_doc(
        c, f"fitted end to end by scripts/lomo_report.py on {n} unsaturated stages of real vLLM runs of "
           f"{', '.join(models)}; free: {', '.join(args.free)}", [r.name for r in runs]), indent=1) + "\n")
    return c


_REPLAYED: dict[tuple, FidelityReport] = {}


def replay_dataset(manifest: Path, d: dict, pick) -> FidelityReport:
    """Every run of a dataset, as ``arrow-rl fidelity --skip-unsupported`` replays it, each with ``pick(model)``.

    A run replayed before with the same constants is not replayed again (the LOMO column of a model
    no fit saw is the refit's)."""
    rep = FidelityReport()
    for path in expand(manifest, d["paths"]):
        try:
            runs = load_runs(path)
        except UnsupportedRun as exc:
            rep.skipped.append(str(exc))
            continue
        for run in runs:
            preset = d.get("preset")
            if preset is not None and preset.endswith((".yaml", ".yml")):
                preset = str(manifest.parent / preset)
            key = (str(path), run.name, pick(run.model), preset)
            if key not in _REPLAYED:
                _REPLAYED[key] = replay([run], pick(run.model), preset=preset, skip_unsupported=True)
            one = _REPLAYED[key]
            rep.stages += one.stages
            rep.skipped += one.skipped
    return rep


def summary(rep: FidelityReport) -> dict[str, Any]:
    med = rep.median_ape()
    sat = rep.saturated_throughput_ape()
    return {"unsaturated": sum(not s.saturated for s in rep.stages), **{k: med[k] for k in ("e2e", "tpot", "ttft")},
            "saturated": len(sat), "throughput": float(np.median(sat)) if sat else math.nan}


def split(rep: FidelityReport, key: str | None) -> dict[str, FidelityReport]:
    """One report per group of stages (``key: "preset"`` splits aiconfigurator by model and TP)."""
    if key is None:
        return {"": rep}
    out: dict[str, FidelityReport] = {}
    for s in rep.stages:
        out.setdefault(getattr(s, key), FidelityReport()).stages.append(s)
    return out


def fmt(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--fits", type=Path, required=True, help="folder of the cached fits")
    ap.add_argument("--baseline", type=Path, default=None, help="constants to compare with (default: shipped)")
    ap.add_argument("--fit", default=None, help="only run this fit ('refit' or a without-<model> label) and stop")
    ap.add_argument("--iters", type=int, default=250, help="loss evaluations per fit")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of each stage replayed while fitting")
    ap.add_argument("--max-concurrency", type=int, default=64, help="closed loops above N are not fitted on")
    ap.add_argument("--free", nargs="+", default=list(FREE), help="constants to fit")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    spec: dict = json.loads(args.manifest.read_text())
    base = read_constants(args.baseline) if args.baseline else engine_constants()
    runs = fit_runs(args.manifest, spec, args.max_concurrency)
    models = sorted({r.model for r in runs})
    jobs = {"refit": runs, **{label(m): [r for r in runs if r.model != m] for m in models}}
    if args.fit is not None:
        if args.fit not in jobs:
            raise SystemExit(f"--fit: one of {', '.join(jobs)}")
        get_fit(args.fits, args.fit, jobs[args.fit], base, args)
        return
    t0 = time.time()
    fitted = {name: get_fit(args.fits, name, r, base, args) for name, r in jobs.items()}
    columns = {"baseline": lambda m: base, "refit": lambda m: fitted["refit"],
               "lomo": lambda m: fitted.get(label(m), fitted["refit"])}
    table: dict[str, dict[str, dict]] = {}
    for name, d in spec.items():
        for col, pick in columns.items():
            for group, rep in split(replay_dataset(args.manifest, d, pick), d.get("split")).items():
                table.setdefault(f"{name} {group}".strip(), {})[col] = summary(rep)
    fit_models = set(models)
    print(f"fit models: {', '.join(models)}; replayed in {time.time() - t0:.0f} s")
    print("| dataset | unsat. | e2e base / LOMO / refit | TPOT base / LOMO / refit | TTFT base / LOMO / refit "
          "| sat. | throughput base / LOMO / refit |")
    print("|---|---:|---|---|---|---:|---|")
    for row, cols in table.items():
        b, lo, r = cols["baseline"], cols["lomo"], cols["refit"]
        cells = [" / ".join(fmt(c[k]) for c in (b, lo, r)) for k in ("e2e", "tpot", "ttft")]
        print(f"| {row} | {b['unsaturated']} | {' | '.join(cells)} | {b['saturated']} | "
              f"{' / '.join(fmt(c['throughput']) for c in (b, lo, r))} |")
    if args.json:
        args.json.write_text(json.dumps({"fit_models": sorted(fit_models), "table": table,
                                         "constants": {k: v.__dict__ for k, v in fitted.items()}},
                                        indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
