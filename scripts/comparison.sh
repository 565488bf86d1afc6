#!/usr/bin/env bash
# The comparison table of docs/comparison.md: every model x 3 seeds on the minilm-wordnet zoo's r = 4 train split
# (early stopping on val; test and the test_r* rank splits are scored by `lolctl train` and stored in each
# checkpoint), then scripts/comparison_report.py writes the tables and the rank-generalisation plot.
# Resumable: a run whose checkpoint exists is skipped. Two runs at a time, one thread each (2-core machine).
#   ./scripts/comparison.sh            # all models, seeds 0 1 2 (log: runs/comparison.log)
#   MODELS="glnet mlp_svd" SEEDS=0 ./scripts/comparison.sh
# Models are trained on ZOO/labels-main.csv: the train/val/test rows only (written here from the adapters'
# meta.json files, refusing while any of them is missing), so fixed-rank baselines get the r = 4 input layer of the
# train split and the rank splits may still be building; the report then evaluates every checkpoint on test_r*.
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-zoo/minilm-wordnet}
RUNS=${RUNS:-runs}
MODELS=${MODELS:-"glnet glnet+anchors mlp mlp_svd mlp_oalign transformer mlp_dense"}
SEEDS=${SEEDS:-"0 1 2"}
JOBS=${JOBS:-2}
mkdir -p "$RUNS"

# Shared by every model: each module's ΔW scaled to unit norm, its log-norm given to the head (docs/models.md).
COMMON=(--set unit_norm=true --threads 1 --format json)
# MLP+Dense: the default 128-wide first layer on 12 x 384 x 384 inputs needs 3.6 GB for training (L173 refuses);
# 32 wide (57M parameters) fits. Each epoch pushes every adapter's 1.77M-entry ΔW through it: fewer epochs.
declare -A EXTRA=([mlp_dense]="--set head_hidden=32 --epochs 40 --patience 8" [glnet+anchors]="--set anchors=64")

run() {
    local model=$1 seed=$2 out="$RUNS/$1-s$2"
    if [[ -f "$out/config.json" ]]; then echo "skip $out (done)"; return; fi
    echo "$(date -u +%H:%M:%S) start $out"
    # shellcheck disable=SC2086
    python3 -m lolctl train "$LABELS" --model "${model%%+*}" --seed "$seed" --out "$out" "${COMMON[@]}" ${EXTRA[$model]:-} \
        > "$out.json" 2> "$out.log" || { echo "FAILED $out (see $out.log)"; return; }
    echo "$(date -u +%H:%M:%S) done $out"
}

python3 - "$ZOO" <<'PY'
import json, sys
from pathlib import Path
from lolctl.zoo.format import labels_text, read_metas
zoo = Path(sys.argv[1])
manifest = json.loads((zoo / "manifest.json").read_text())
metas = [m for m in read_metas(zoo) if m["split"] in ("train", "val", "test")]
missing = {s: manifest["splits"][s] - sum(m["split"] == s for m in metas) for s in ("train", "val", "test")}
if any(missing.values()):
    sys.exit(f"{zoo}: not built yet, missing {missing}; rerun when scripts/build_zoo.sh got past the train split")
(zoo / "labels-main.csv").write_text(labels_text(metas, manifest["tasks"]))
print(f"{len(metas)} adapters -> {zoo / 'labels-main.csv'}", file=sys.stderr)
PY
LABELS="$ZOO/labels-main.csv"
# Read the adapters once (fills the zoo's factor cache) before the parallel runs.
python3 -c "from lolctl.nn.data import load_factors; from lolctl.zoo.format import load_zoo; load_factors(load_zoo('$LABELS'))"
for seed in $SEEDS; do
    for model in $MODELS; do
        while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n; done
        run "$model" "$seed" &
    done
done
wait
python3 scripts/comparison_report.py "$RUNS" --zoo "$ZOO"
