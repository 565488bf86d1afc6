#!/usr/bin/env bash
# Learning curve of issue 11 item 2: models trained on the first N LoRAs of the minilm-wordnet train split (early
# stopping on the whole val split), each scored on the committed test split (tests/data/minilm-wordnet-test: test,
# test_r1, test_r2, never seen in training). Resumable: a run whose checkpoint exists is skipped. One run at a time,
# one thread (the other core may be building). Then scripts/learning_curve_report.py prints the table.
# ZOO is a built zoo folder or a packed one (data/minilm-wordnet-train, committed: val + train packed).
#   ZOO=data/minilm-wordnet-train SIZES="128 256 512 1024" ./scripts/learning_curve.sh
# MODELS: model names (trained with --set unit_norm=true; auto with its default candidates) or NAME:KEY=V,KEY=V for
# other settings (e.g. glnet:unit_norm=true,hidden=8,anchors=64); AUTO_CANDIDATES: --candidates of auto runs;
# TRAIN_ARGS: more `lolctl train` options for every run (e.g. "--task membership", "--ensemble 3").
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-data/minilm-wordnet-train}
RUNS=${RUNS:-runs/learning-curve}
SIZES=${SIZES:-"128 256 512 1024"}
MODELS=${MODELS:-"mlp_svd auto"}
SEEDS=${SEEDS:-0}
TEST=${TEST:-tests/data/minilm-wordnet-test}
mkdir -p "$RUNS"
LABELS=$ZOO  # the subsets must sit beside the zoo's manifest (data/*/labels-n*.csv are git-ignored)

for n in $SIZES; do
    python3 - "$ZOO" "$n" "$LABELS/labels-n$n.csv" <<'PY'
import csv, sys
from pathlib import Path
from lolctl.zoo.format import load_zoo
zoo, n, out = load_zoo(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
planned = zoo.manifest.get("splits", {}).get("val", 0)
rows = sorted(zoo.rows, key=lambda r: r["id"])  # build order: lora-00000, lora-00001, ...
train = [r for r in rows if r["split"] == "train"][:n]
val = [r for r in rows if r["split"] == "val"]
if len(train) < n or len(val) < planned:
    sys.exit(f"{sys.argv[1]}: {len(train)} train / {len(val)} val LoRAs; {n} / {planned} needed")
with out.open("w", newline="", encoding="utf-8") as fh:
    writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(val + train)
PY
    for seed in $SEEDS; do
        for spec in $MODELS; do
            model=${spec%%:*}
            settings=(--set unit_norm=true)
            if [[ $spec == *:* ]]; then
                settings=()
                IFS=, read -ra kvs <<< "${spec#*:}"
                for kv in "${kvs[@]}"; do settings+=(--set "$kv"); done
            fi
            [[ $model == auto ]] && settings=(${AUTO_CANDIDATES:+--candidates "$AUTO_CANDIDATES"})
            label=$(echo "$spec" | tr ':,=/' '-___')
            out="$RUNS/$label-n$n-s$seed"
            if [[ ! -f "$out/config.json" ]]; then
                echo "$(date -u +%H:%M:%S) train $out"
                # shellcheck disable=SC2086
                python3 -m lolctl train "$LABELS/labels-n$n.csv" --model "$model" --seed "$seed" "${settings[@]}" \
                    ${TRAIN_ARGS:-} --threads 1 --out "$out" --format json > "$out.train.json" 2> "$out.log"
            fi
            for r in test test_r1 test_r2; do
                [[ -f "$out.$r.json" ]] || python3 -m lolctl eval "$out" "$TEST" --split "$r" --threads 1 \
                    --format json > "$out.$r.json"
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
