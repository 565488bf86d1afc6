#!/usr/bin/env bash
# One-time set-up on a fresh machine: a CPU build of torch first (a plain `torch` requirement would pull a
# multi-GB CUDA build), then lolctl itself with its test extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "setup: installing torch==2.13.0 (CPU build)" >&2
    "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e ".[test,zoo]" 2>&1 | grep -v "Running pip as the 'root' user" >&2 || true
"$PY" -c "import lolctl, torch, peft, typer, rich, huggingface_hub, safetensors" || {
    echo "setup: installation failed" >&2
    exit 1
}
echo "setup: ok ($("$PY" -m lolctl --version))" >&2
