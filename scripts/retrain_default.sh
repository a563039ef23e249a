#!/usr/bin/env bash
# Retrain the shipped checkpoint agents/checkpoints/default from scratch (behaviour cloning of the
# Arrow interval controller + DAgger, then MaskablePPO fine-tuning; configs/train/bc_dagger_ppo.yaml).
# Deterministic for a given seed on a given machine and package set. ~20-30 min on 2 CPU cores.
#
#   scripts/retrain_default.sh [SEED] [OUT_DIR]
#
# The run directory (TensorBoard logs, report.json, clone/best/final checkpoints) goes to runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
SEED="${1:-0}"
OUT="${2:-agents/checkpoints/default}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
arrow-rl train --config configs/train/bc_dagger_ppo.yaml --seed "$SEED" --out "$OUT"
du -sh "$OUT"
