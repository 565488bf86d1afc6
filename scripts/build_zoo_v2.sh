#!/usr/bin/env bash
# Build (or resume) the minilm-wordnet-v2 zoo (training length follows data size, docs/zoo.md) in the background.
# Order: val, test, train, then the rank splits, so models can be trained on the part that exists.
# Rerun the same command after a kill or reboot: finished LoRAs are kept, the rest are built.
#   ZOO (default /work/zoos/minilm-wordnet-v2), WORKERS (default 1), LOG (default $ZOO.log)
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-/work/zoos/minilm-wordnet-v2}
LOG=${LOG:-$ZOO.log}
mkdir -p "$(dirname "$ZOO")"
OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" nohup python3 -m lolctl zoo build \
    "$ZOO" --recipe minilm-wordnet-v2 --workers "${WORKERS:-1}" >> "$LOG" 2>&1 &
echo "zoo build started: pid $! (log: $LOG)"
