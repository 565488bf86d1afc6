#!/usr/bin/env bash
# One-time set-up on a fresh machine: a CPU build of torch first (a plain `torch` requirement would pull a
# multi-GB CUDA build), then lolctl itself with its test, zoo and ray extras (Ray: --engine ray and its tests, about
# 80 MB). Safe to run again.
#
# Where torch comes from: if pip can already see a CPU wheel of torch==$TORCH_VERSION without any index (a local
# wheel folder configured for pip, as on the project's machines), that one; otherwise PyTorch's CPU index
# ($TORCH_INDEX_URL) with PyPI for torch's own dependencies. A torch that is already importable is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}

quiet() { grep -v -e "Running pip as the 'root' user" -e "is ignored: it is neither a file" >&2 || true; }

local_cpu_torch() {
    # The version pip would pick for torch==$TORCH_VERSION from local wheels only (no download, no index).
    "$PY" -m pip install --dry-run --no-deps --no-index -q "torch==$TORCH_VERSION" --report - 2>/dev/null |
        "$PY" -c 'import json, sys; print(*(i["metadata"]["version"] for i in json.load(sys.stdin)["install"]))' \
            2>/dev/null || true
}

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    if [[ "$(local_cpu_torch)" == *+cpu ]]; then
        echo "setup: installing torch==$TORCH_VERSION (CPU build, from a local wheel)" >&2
        "$PY" -m pip install -q "torch==$TORCH_VERSION" 2>&1 | quiet
    else
        echo "setup: installing torch==$TORCH_VERSION (CPU build, from $TORCH_INDEX_URL)" >&2
        "$PY" -m pip install -q "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL" \
            --extra-index-url https://pypi.org/simple 2>&1 | quiet
    fi
fi
"$PY" -m pip install -q -e ".[test,zoo,ray]" 2>&1 | quiet
"$PY" -c "import lolctl, torch, peft, typer, rich, huggingface_hub, safetensors" || {
    echo "setup: installation failed" >&2
    exit 1
}
# The HTML report's browser test (tests/test_report_browser.py) needs Debian's chromium; it skips without it.
# Best effort, as root on Debian only; LOLCTL_NO_BROWSER=1 skips it.
if [[ -z "${LOLCTL_NO_BROWSER:-}" ]] && ! command -v chromium >/dev/null && command -v apt-get >/dev/null &&
    [[ "$(id -u)" == 0 ]]; then
    echo "setup: installing chromium (for the HTML report's browser test)" >&2
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } >/dev/null 2>&1 ||
        echo "setup: note: chromium could not be installed; the browser test will be skipped" >&2
fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda is None else 1)" ||
    echo "setup: note: the installed torch is a CUDA build (it was there before); lolctl runs on it as well" >&2
echo "setup: ok ($("$PY" -m lolctl --version))" >&2
