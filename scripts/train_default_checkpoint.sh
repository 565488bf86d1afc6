#!/usr/bin/env bash
# Train the default checkpoint models/minilm-wordnet-glnet on the committed training data of the flagship zoo
# (data/minilm-wordnet-train: val 160 + train 2,048 LoRAs at r = 4, packed; the checkpoint shipped on 2026-12-07 saw
# the first 1,024 — ZOO=data/minilm-wordnet-train/labels-n1024.csv, docs/zoo.md), give its OOD check the lemma-side input
# contrast, then score the committed test splits (tests/data/minilm-wordnet-test: test, test_r1, test_r2), the
# test split of the zoo built with --seed 1 (data/minilm-wordnet-test-s1, stored as test_seed1) and the test_r8 /
# test_r16 splits (data/minilm-wordnet-test-r8r16, packed: `lolctl zoo build zoo/minilm-wordnet --split test_r8
# --split test_r16`, then `lolctl zoo pack ... --split test_r8 --split test_r16`); the metrics go into
# config.json and the model card, which tests/test_default_checkpoint.py checks. The model: `--model auto --blend 4`
# with the candidates of scripts/default_candidates.sh — per task a GL-net with base-model probes and anchors and an
# MLP+SVD, for the three data attributes also MLP+Dense trained as rank-16 factors — blended per task (docs/models.md).
#   ./scripts/train_default_checkpoint.sh            (THREADS=2 on an idle 2-core machine)
#   FROM=runs/comparison/shipped-s0 ./scripts/train_default_checkpoint.sh
#       takes the seed-0 run of scripts/comparison.sh (the same training command and seed) instead of training again:
#       the folder is copied and renamed, then calibrated and scored as below.
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-data/minilm-wordnet-train}
TEST=${TEST:-tests/data/minilm-wordnet-test}
SECOND=${SECOND:-data/minilm-wordnet-test-s1}
RANKS=${RANKS:-data/minilm-wordnet-test-r8r16}
OUT=${OUT:-models/minilm-wordnet-glnet}
CONTRAST=${CONTRAST:-data/minilm-wordnet-lemma-probes.safetensors}
source scripts/default_candidates.sh
CANDIDATES=${CANDIDATES:-$DEFAULT_CANDIDATES}
mkdir -p runs
[[ -f "$PROBES" ]] || HF_HUB_OFFLINE=1 python3 -m lolctl zoo probes "$PROBES"
[[ -f "$CONTRAST" ]] || HF_HUB_OFFLINE=1 python3 -m lolctl zoo probes "$CONTRAST" --set adapted=lemma
T=(--threads "${THREADS:-1}")
if [[ -n "${FROM:-}" ]]; then
    python3 - "$FROM" "$OUT" <<'PY'
import json, shutil, sys
from pathlib import Path
from lolctl.nn.checkpoint import FILES, OPTIONAL_FILES, write_config
src, out = Path(sys.argv[1]), Path(sys.argv[2])
config = json.loads((src / "config.json").read_text())
assert config["train_config"]["seed"] == 0, "FROM must be a seed-0 run"
out.mkdir(parents=True, exist_ok=True)
for name in (*FILES, *OPTIONAL_FILES):
    (out / name).unlink(missing_ok=True)
    if (src / name).is_file():
        shutil.copy2(src / name, out / name)
config["name"] = "minilm-wordnet-glnet"
write_config(out, config)
PY
else
    python3 -m lolctl train "$ZOO" $SHIPPED_ARGS --candidates "$CANDIDATES" --seed "${SEED:-0}" "${T[@]}" \
        --name minilm-wordnet-glnet --out "$OUT" --overwrite --format json > runs/default-checkpoint.json
fi
python3 -m lolctl calibrate "$OUT" "$ZOO" --split val --ood-contrast "$CONTRAST" "${T[@]}" --format json \
    > runs/default-checkpoint.calibrate.json
for split in test test_r1 test_r2; do
    python3 -m lolctl eval "$OUT" "$TEST" --split "$split" --store "${T[@]}" --format json \
        > "runs/default-checkpoint.$split.json"
done
if [[ -e "$SECOND" ]]; then
    python3 -m lolctl eval "$OUT" "$SECOND" --split test --store --store-as test_seed1 "${T[@]}" --format json \
        > runs/default-checkpoint.test_seed1.json
fi
if [[ -e "$RANKS/labels.csv" ]]; then  # packed: complete splits (a zoo still building would give partial ones)
    for split in test_r8 test_r16; do
        python3 -m lolctl eval "$OUT" "$RANKS" --split "$split" --store "${T[@]}" --format json \
            > "runs/default-checkpoint.$split.json"
    done
fi
