#!/usr/bin/env bash
# Build (or resume) the flagship minilm-wordnet zoo in the background; progress goes to zoo/build.log.
# Rerun the same command after a kill or reboot: finished LoRAs are kept, the rest are built.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p zoo
HF_HUB_OFFLINE=1 nohup lolctl zoo build zoo/minilm-wordnet --recipe minilm-wordnet --workers "${WORKERS:-2}" \
    >> zoo/build.log 2>&1 &
echo "zoo build started: pid $! (log: zoo/build.log)"
