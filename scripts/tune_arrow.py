#!/usr/bin/env python
"""Grid-search Arrow's open constants for one workload (docs/arrow.md decision 1: tune L_EXPAND,
L_SHRINK, cooldown and Δ per workload before claiming that RL beats Arrow; train-split workloads only).

The paper gives no values, so each workload gets its own. A full grid is too costly (every point
is a serving-rate search), so this runs coordinate search: start from the defaults, sweep one
constant over its grid with the others fixed, keep the best, and repeat for ``--passes`` passes.
Each point is the suite's serving-rate search (``arrow_rl.evaluation.seeded_search``) in the
paper's setting: timestamp scaling (``rate_mode: scale``, Arrow §6.1), no warm-up, one seed. Every
search starts at factor 1 on the common load grid, so configurations are compared on the same
loads. Points of one coordinate run in parallel processes (``arrow_rl.evaluation.jobs``). The
winner goes to ``configs/arrow/<name>.yaml`` with its serving rate and the command that produced it.

Example (what docs/arrow_results.md ran):
    python scripts/tune_arrow.py --workload azure-code --preset h100-llama3.1-70b-tp4 \
        --instances 8 --slo-ttft 10 --slo-tpot 0.125 --duration 1200 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from arrow_rl.cluster.emulator.config import EmulatorConfig
from arrow_rl.arrow import ArrowConfig
from arrow_rl.evaluation.jobs import run_jobs
from arrow_rl.evaluation.protocol import LoadSource, Protocol
from arrow_rl.evaluation.seeded_search import search_controller
from arrow_rl.workload.loaders import load_workload

GRID: dict[str, list] = {
    "l_expand": [0.8, 1.0, 1.25, 1.5],
    "l_shrink": [0.2, 0.35, 0.5, 0.7],
    "cooldown_s": [0.0, 2.0, 5.0, 10.0, 20.0],
    "update_interval_s": [1.0, 2.0, 5.0],
    "sustain_count": [1, 2, 3, 5],
    "overload_rule": ["l_shrink", "l_expand"],
    "candidate_set": ["role", "all"],
    "ttft_headroom": [1.0, 0.95, 0.9, 0.8],            # extension (paper = 1.0)
    "decode_capacity_limits": [False, True],          # extension (paper = False)
    "max_d2p_per_interval": [1, 2, 4],                 # arrow-interval only
    "d2p_trigger": ["pending_misses", "predicted", "either"],  # arrow-interval only
}
INTERVAL_ONLY = ("max_d2p_per_interval", "d2p_trigger")


def _rate(source: LoadSource, emu: EmulatorConfig, overrides: dict, protocol: Protocol, spec: str,
          notify: Callable | None = None) -> tuple[dict, float, float]:
    """(overrides, serving rate in req/s, wall s) of ``spec`` with Arrow's constants ``overrides``."""
    try:
        cfg = ArrowConfig(**overrides)
    except ValueError:
        return overrides, -1.0, 0.0  # invalid combination (e.g. l_shrink > l_expand)
    t0 = time.perf_counter()
    (seed,) = search_controller(source, emu, spec, protocol, arrow_config=cfg)
    return overrides, seed.rate, time.perf_counter() - t0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--name", help="config name (default: workload name)")
    ap.add_argument("--preset", default="h100-llama3.1-70b-tp4")
    ap.add_argument("--instances", type=int, default=8)
    ap.add_argument("--slo-ttft", type=float, required=True)
    ap.add_argument("--slo-tpot", type=float, required=True)
    ap.add_argument("--start", type=float, default=0.0)
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--spec", default="arrow", help="arrow (event-driven) or arrow-interval")
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--params", default=None, help="constants to tune, comma list (default: all that apply to --spec)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rel-tol", type=float, default=0.03)
    ap.add_argument("--max-evals", type=int, default=10)
    ap.add_argument("--out-dir", type=Path, default=Path("configs/arrow"))
    args = ap.parse_args(argv)
    if args.params is None:
        args.params = [p for p in GRID if args.spec == "arrow-interval" or p not in INTERVAL_ONLY]
    else:
        args.params = [p.strip() for p in args.params.split(",") if p.strip()]
    unknown = [p for p in args.params if p not in GRID]
    if unknown:
        ap.error(f"unknown constants {unknown}; choose from {list(GRID)}")
    return args


def _coordinate_search(args: argparse.Namespace, source: LoadSource, emu: EmulatorConfig,
                       protocol: Protocol) -> tuple[dict, float, list[dict[str, Any]]]:
    """(best overrides, their serving rate, every configuration tried with its rate)."""
    best: dict = {}
    _, best_rate, _ = _rate(source, emu, best, protocol, args.spec)
    print(f"defaults: {best_rate:.3f} req/s", flush=True)
    history: list[dict[str, Any]] = [{"overrides": {}, "serving_rate": best_rate}]
    for p in range(args.passes):
        for name in args.params:
            trials = [{**best, name: v} for v in GRID[name] if best.get(name, ArrowConfig().model_dump()[name]) != v]
            outs = run_jobs(_rate, [(i, (source, emu, t, protocol, args.spec)) for i, t in enumerate(trials)],
                            jobs=args.jobs)
            for i in range(len(trials)):
                overrides, rate, wall = outs[i]
                history.append({"overrides": overrides, "serving_rate": rate})
                print(f"pass {p + 1} {name}={overrides.get(name)!r}: {rate:.3f} req/s ({wall:.0f} s)", flush=True)
                if rate > best_rate * (1 + args.rel_tol):  # beyond the search resolution, not noise
                    best, best_rate = overrides, rate
            print(f"  best so far {best_rate:.3f} req/s with {best}", flush=True)
    return best, best_rate, history


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    wl = load_workload(args.workload)
    if args.start > 0 or args.duration is not None:
        wl = wl.window(args.start, args.start + args.duration if args.duration is not None else math.inf)
    emu = EmulatorConfig(preset=args.preset, num_instances=args.instances, slo_ttft_s=args.slo_ttft,
                         slo_tpot_s=args.slo_tpot)
    protocol = Protocol(rate_mode="scale", warmup_s=0.0, seeds=(args.seed,), rel_tol=args.rel_tol,
                        max_evals=args.max_evals)
    t0 = time.perf_counter()
    best, best_rate, history = _coordinate_search(args, LoadSource(wl.name, trace=wl), emu, protocol)

    cfg = ArrowConfig(**best)
    name = args.name or Path(str(args.workload)).stem
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"{name}.yaml"
    cmd = "python scripts/tune_arrow.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    header = (f"# Arrow constants tuned for {name} by coordinate grid search (scripts/tune_arrow.py).\n"
              f"# {args.instances}x {args.preset}, SLO TTFT {args.slo_ttft:g} s / TPOT {args.slo_tpot:g} s, "
              f"trace window start={args.start:g} duration={args.duration}, seed {args.seed}.\n"
              f"# serving rate: defaults {history[0]['serving_rate']:.3f} req/s -> tuned {best_rate:.3f} req/s "
              f"({len(history)} configurations, {time.perf_counter() - t0:.0f} s).\n"
              f"# command: {cmd}\n")
    out.write_text(header + yaml.safe_dump(cfg.model_dump(), sort_keys=False), encoding="utf-8")
    (args.out_dir / f"{name}.tuning.json").write_text(json.dumps(history, indent=1), encoding="utf-8")
    print(f"wrote {out}: {best_rate:.3f} req/s (defaults {history[0]['serving_rate']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
