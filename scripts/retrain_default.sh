#!/usr/bin/env bash
# Retrain the shipped checkpoint agents/checkpoints/default from scratch: MaskablePPO with the
# "target prefill count" action space, flip penalty 0.05, gamma 0.99, 80k steps
# (configs/train/maskable_ppo_target_flipcost.yaml); the
# best fixed-seed validation checkpoint is kept. Deterministic for a seed on one machine. ~10-25 min on 2 cores.
#
#   scripts/retrain_default.sh [SEED] [OUT_DIR]
#
# The run directory (TensorBoard logs, report.json, clone/best/final checkpoints) goes to runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
SEED="${1:-0}"
OUT="${2:-agents/checkpoints/default}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
arrow-rl train --config configs/train/maskable_ppo_target_flipcost.yaml --seed "$SEED" --out "$OUT"
du -sh "$OUT"
