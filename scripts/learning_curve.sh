#!/usr/bin/env bash
# Learning curve of issue 11 item 2: models trained on the first N LoRAs of the minilm-wordnet train split (early
# stopping on the whole val split), each scored on the committed test split (tests/data/minilm-wordnet-test: test,
# test_r1, test_r2, never seen in training). Resumable: a run whose checkpoint exists is skipped. One run at a time,
# one thread (the other core may be building). Then scripts/learning_curve_report.py prints the table.
#   lolctl zoo build ZOO --recipe minilm-wordnet --split val --split train [--limit 672]   (first)
#   ZOO=/work/zoos/minilm-wordnet SIZES="128 256 512" ./scripts/learning_curve.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-zoo/minilm-wordnet}
RUNS=${RUNS:-runs/learning-curve}
SIZES=${SIZES:-"128 256 512 1024"}
MODELS=${MODELS:-"mlp_svd auto"}
SEEDS=${SEEDS:-0}
TEST=${TEST:-tests/data/minilm-wordnet-test}
mkdir -p "$RUNS"

for n in $SIZES; do
    python3 - "$ZOO" "$n" <<'PY'
import json, sys
from pathlib import Path
from lolctl.zoo.format import labels_text, read_metas
zoo, n = Path(sys.argv[1]), int(sys.argv[2])
manifest = json.loads((zoo / "manifest.json").read_text())
metas = sorted(read_metas(zoo), key=lambda m: m["index"])
train = [m for m in metas if m["split"] == "train"][:n]
val = [m for m in metas if m["split"] == "val"]
if len(train) < n or len(val) < manifest["splits"]["val"]:
    sys.exit(f"{zoo}: {len(train)} train / {len(val)} val LoRAs built; {n} / {manifest['splits']['val']} needed")
(zoo / f"labels-n{n}.csv").write_text(labels_text(val + train, manifest["tasks"]))
PY
    for seed in $SEEDS; do
        for model in $MODELS; do
            out="$RUNS/$model-n$n-s$seed"
            if [[ ! -f "$out/config.json" ]]; then
                echo "$(date -u +%H:%M:%S) train $out"
                settings=(--set unit_norm=true)  # auto: each candidate's settings are in its --candidates default
                [[ $model == auto ]] && settings=()
                python3 -m lolctl train "$ZOO/labels-n$n.csv" --model "$model" --seed "$seed" "${settings[@]}" \
                    --threads 1 --out "$out" --format json > "$out.train.json" 2> "$out.log"
            fi
            python3 -m lolctl eval "$out" "$TEST" --split test --threads 1 --format json > "$out.test.json"
            for r in test_r1 test_r2; do
                python3 -m lolctl eval "$out" "$TEST" --split "$r" --threads 1 --format json > "$out.$r.json"
            done
            echo "$(date -u +%H:%M:%S) done $out"
        done
    done
done
for r in test test_r1 test_r2; do  # the reference: the shipped checkpoint, trained on all 1,024
    [[ -f "$RUNS/shipped.$r.json" ]] || python3 -m lolctl eval minilm-wordnet-glnet "$TEST" --split "$r" --threads 1 \
        --format json > "$RUNS/shipped.$r.json"
done
python3 scripts/learning_curve_report.py "$RUNS" --shipped "$RUNS/shipped.test.json"
