#!/usr/bin/env bash
# The comparison table of docs/comparison.md: every model x 3 seeds trained on the committed training data of the
# minilm-wordnet zoo (data/minilm-wordnet-train: r = 4 train split, early stopping on val), then
# scripts/comparison_report.py scores every checkpoint on the committed test splits (tests/data/minilm-wordnet-test:
# test, test_r1, test_r2) and on a test zoo built with another seed (SECOND, default data/minilm-wordnet-test-s1 when
# present), and writes the tables and the
# rank-generalisation plot. `shipped` is the model of scripts/train_default_checkpoint.sh (same candidates).
# Resumable: a run whose checkpoint exists is skipped, and so is one whose results were kept (KEPT, committed: the
# report writes each run's config and evaluations there, so a later session on a fresh machine rebuilds the tables
# without retraining it); a run another instance is doing (a live claim) too, so a second
# instance can be started when a core frees up. One thread per run.
#   ./scripts/comparison.sh                                  # all models, seeds 0 1 2 (log: runs/comparison.log)
#   MODELS="shipped mlp_svd" SEEDS=0 ./scripts/comparison.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-data/minilm-wordnet-train}
TEST=${TEST:-tests/data/minilm-wordnet-test}
SECOND=${SECOND:-data/minilm-wordnet-test-s1}
[[ -e "$SECOND" ]] || SECOND=""
RUNS=${RUNS:-runs/comparison}
KEPT=${KEPT:-docs/comparison-runs}
MODELS=${MODELS:-"shipped mlp_svd mlp_oalign mlp_dense glnet transformer mlp"}
SEEDS=${SEEDS:-"0 1 2"}
JOBS=${JOBS:-1}
source scripts/default_candidates.sh
mkdir -p "$RUNS"
for kept in "$KEPT"/*/; do  # results kept by an earlier run of this script: not trained again
    if [[ -f "$kept/config.json" && ! -e "$RUNS/$(basename "$kept")" ]]; then cp -r "$kept" "$RUNS/"; fi
done

# Shared by every baseline: each module's ΔW scaled to unit norm, its log-norm given to the head (docs/models.md).
COMMON=(--threads 1 --format json)
# MLP+Dense: the default 128-wide first layer on 12 x 384 x 384 inputs needs 3.6 GB for training (L173 refuses);
# 32 wide (57M parameters) fits. Each epoch pushes every adapter's 1.77M-entry ΔW through it: fewer epochs.
declare -A ARGS=(
    [shipped]="$SHIPPED_ARGS --candidates $DEFAULT_CANDIDATES"
    [mlp_dense]="--model mlp_dense --set unit_norm=true --set head_hidden=32 --epochs 40 --patience 8"
)

run() {
    local model=$1 seed=$2 out="$RUNS/$1-s$2"
    if [[ -f "$out/config.json" ]]; then echo "skip $out (done)"; return; fi
    if [[ -f "$out.claim" ]] && kill -0 "$(cat "$out.claim")" 2>/dev/null; then echo "skip $out (running)"; return; fi
    echo $$ > "$out.claim"
    echo "$(date -u +%H:%M:%S) start $out"
    # shellcheck disable=SC2086
    python3 -m lolctl train "$ZOO" ${ARGS[$model]:---model $model --set unit_norm=true} --seed "$seed" \
        --out "$out" --overwrite "${COMMON[@]}" > "$out.json" 2> "$out.log" \
        && echo "$(date -u +%H:%M:%S) done $out" || echo "FAILED $out (see $out.log)"
    rm -f "$out.claim"
}

[[ -f "$PROBES" ]] || HF_HUB_OFFLINE=1 python3 -m lolctl zoo probes "$PROBES"
for model in $MODELS; do  # model-major: the important rows finish first
    for seed in $SEEDS; do
        while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n; done
        run "$model" "$seed" &
    done
done
# `wait` also returns when a job is stopped and continued (benchmarks/paused.sh pauses training runs): until none is left
while [[ -n "$(jobs -p)" ]]; do wait || true; done
python3 scripts/comparison_report.py "$RUNS" --zoo "$TEST" ${SECOND:+--second "$SECOND"} --keep "$KEPT"
