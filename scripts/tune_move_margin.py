#!/usr/bin/env python
"""Pick a checkpoint's deploy-time move margin on the suite's TRAIN scenarios only.

A cloned policy that only narrowly prefers a move over the no-op flips an instance it did not need
to, and every flip drains one. ``inference.move_margin`` in a checkpoint's ``metadata.json`` holds
the deployed policy at the no-op unless a move's logit beats the no-op's by the margin (a log-odds
threshold: ``agents.inference.hold_unless_confident``). This script measures each candidate margin
with the suite's own protocol (seeds, serving-rate search, intervals) on the scenarios marked
``split: train``, never on a test scenario, and ranks margins by the geometric mean of their serving
rates. With ``--write`` the winner, the scenarios it was picked on and the table go into the
checkpoint's metadata, so the choice is on record wherever the checkpoint is deployed.

Example (what docs/agents.md ran for the shipped generalist):
    python scripts/tune_move_margin.py --checkpoint agents/checkpoints/default \
        --margins 0,0.5,1,2 --quick --jobs 2 --json runs/move_margin.json --write
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from arrow_rl.evaluation.suite import run_suite
from arrow_rl.evaluation.suite_spec import load_suite

from agents.checkpoint import METADATA_FILE, read_metadata


def _margins(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--margins {text!r}: expected a comma list of numbers >= 0") from None
    if not values or any(not math.isfinite(v) or v < 0 for v in values) or len(set(values)) != len(values):
        raise SystemExit(f"--margins {text!r}: expected distinct finite numbers >= 0")
    return values


def margin_copy(checkpoint: Path, margin: float, where: Path) -> Path:
    """A copy of ``checkpoint`` whose metadata sets ``inference.move_margin`` (the model is shared)."""
    out = where / f"margin-{margin:g}"
    out.mkdir()
    for item in checkpoint.iterdir():
        if item.is_file() and item.name != METADATA_FILE:
            (out / item.name).symlink_to(item.resolve())
    meta = read_metadata(checkpoint)
    meta["inference"] = dict(meta.get("inference") or {}, move_margin=margin)
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2))
    return out


def geomean(xs: list[float]) -> float:
    xs = [x for x in xs if x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--margins", default="0,0.5,1,2", help="comma list of candidate margins (log-odds)")
    ap.add_argument("--suite", default="standard")
    ap.add_argument("--quick", action="store_true", help="the suite's quick protocol")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write the suite results of every margin here")
    ap.add_argument("--write", action="store_true", help="store the winning margin in the checkpoint's metadata")
    args = ap.parse_args(argv)

    margins = _margins(args.margins)
    meta = read_metadata(args.checkpoint)   # a damaged checkpoint fails here, by name
    suite = load_suite(args.suite, quick=args.quick)
    train = [s for s in suite.scenarios if s.split == "train"]
    if not train:
        raise SystemExit(f"suite {suite.name!r} has no split: train scenario to tune on")
    suite = dataclasses.replace(suite, scenarios=train)   # the test scenarios are never run here
    with tempfile.TemporaryDirectory(prefix="move-margin-") as tmp:
        copies = {m: str(margin_copy(args.checkpoint, m, Path(tmp))) for m in margins}
        print(f"{len(margins)} margins x {len(train)} train scenarios of {suite.name!r} "
              f"({', '.join(s.name for s in train)})", file=sys.stderr)
        result = run_suite(suite, list(copies.values()), jobs=args.jobs, quick=args.quick,
                           on_job_done=lambda sc, c, w: print(f"  done {sc} {Path(c).name} ({w:.0f} s)", file=sys.stderr))
    table: dict[str, dict] = {}
    for m, path in copies.items():
        rates = {name: sc.controllers[path].interval for name, sc in result.scenarios.items() if path in sc.controllers}
        table[f"{m:g}"] = {
            "geomean_serving_rate": geomean([iv.mean for iv in rates.values()]),
            "flips_per_min": sum(result.scenarios[n].controllers[path].flips_per_min for n in rates) / max(len(rates), 1),
            "serving_rate": {n: [round(iv.mean, 3), round(iv.lo, 3), round(iv.hi, 3) if math.isfinite(iv.hi) else None]
                             for n, iv in rates.items()},
        }
    base = table[f"{margins[0]:g}"]["geomean_serving_rate"] or 1.0
    print(f"\n{'margin':>7} {'geomean':>9} {'vs first':>9} {'flips/min':>9}  per scenario (mean [95% CI])")
    for m, row in table.items():
        cells = "  ".join(f"{n}: {v[0]:.3g} [{v[1]:.3g}, {v[2] if v[2] is None else format(v[2], '.3g')}]"
                          for n, v in row["serving_rate"].items())
        print(f"{m:>7} {row['geomean_serving_rate']:9.3f} {row['geomean_serving_rate'] / base:8.3f}x "
              f"{row['flips_per_min']:9.2f}  {cells}")
    best = max(table, key=lambda k: table[k]["geomean_serving_rate"])
    print(f"\nbest margin on the train scenarios (in-sample): {best}")
    command = "python scripts/tune_move_margin.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": command, "margins": table, "best": float(best),
                                         "suite": result.to_json()}, indent=2))
    if args.write:
        meta["inference"] = dict(meta.get("inference") or {}, move_margin=float(best), tuned={
            "on": "suite train scenarios only (in-sample for them)", "suite": suite.name, "quick": args.quick,
            "scenarios": [s.name for s in train], "command": command,
            "geomean_serving_rate": {m: round(r["geomean_serving_rate"], 4) for m, r in table.items()},
            "flips_per_min": {m: round(r["flips_per_min"], 3) for m, r in table.items()}})
        path = args.checkpoint / METADATA_FILE
        tmp_path = path.with_suffix(".json.tmp")
        tmp_path.write_text(json.dumps(meta, indent=2))
        shutil.move(tmp_path, path)
        print(f"wrote inference.move_margin={best} to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
