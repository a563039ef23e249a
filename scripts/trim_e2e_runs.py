#!/usr/bin/env python
"""Copy inference-perf run folders, keeping only what ``arrow-rl fidelity`` reads (a few KB per run).

Usage: ``python scripts/trim_e2e_runs.py OUT_DIR RUN_DIR [RUN_DIR ...]``. The copies keep the
folder layout (exp-config.yaml, profile.yaml, results/stage_<i>_lifecycle_metrics.json); every
number kept is unchanged. Used to ship the calibration runs in ``arrow_rl/fidelity/data/``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

KEEP_LATENCY = ("time_to_first_token", "request_latency")


def trim_stage(doc: dict) -> dict:
    s = doc["successes"]
    out = {"load_summary": {k: doc["load_summary"][k] for k in ("count", "requested_rate", "achieved_rate")
                            if k in doc["load_summary"]},
           "successes": {"count": s["count"],
                         "latency": {k: s["latency"][k] for k in KEEP_LATENCY},
                         "prompt_len": s["prompt_len"]}}
    f = doc.get("failures") or {}
    if f.get("count"):
        out["failures"] = {"count": f["count"], "request_latency": f.get("request_latency", {})}
    return out


def main() -> None:
    out_root = Path(sys.argv[1])
    for run in map(Path, sys.argv[2:]):
        dst = out_root / run.name
        (dst / "results").mkdir(parents=True, exist_ok=True)
        for name in ("exp-config.yaml", "profile.yaml"):
            shutil.copyfile(run / name, dst / name)
        for stage in sorted((run / "results").glob("stage_*_lifecycle_metrics.json")):
            doc = json.loads(stage.read_text())
            (dst / "results" / stage.name).write_text(json.dumps(trim_stage(doc), indent=1) + "\n")


if __name__ == "__main__":
    main()
