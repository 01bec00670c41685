#!/usr/bin/env bash
# The whole method comparison on a set of datasets: zero-shot CLIP, linear probe, CoOp, CoCoOp,
# CLIP-Adapter, Tip-Adapter, Tip-Adapter-F, TaskRes and TaskRes on the enhanced base, each with
# its paper's recipe (configs/recipes.yaml) for every shot count and seed, then the comparison
# table and the few-shot figure.
#
#   DATA=/path/to/datasets bash scripts/all_methods.sh
#   DATA=$DATA DATASETS="eurosat dtd" SHOTS="1 16" SEEDS="1" bash scripts/all_methods.sh
#
# Environment (defaults in brackets):
#   DATA           dataset root (required)
#   DATASETS       [the 11 few-shot datasets] configs/datasets names, space or comma separated
#   SHOTS          [1 2 4 8 16]
#   SEEDS          [1 2 3]
#   METHODS        [ZeroshotCLIP LinearProbe CoOp CoCoOp CLIP_Adapter TipAdapter TipAdapterF TaskRes
#                   TaskResEnhanced] a subset to run
#   OUTPUT         [output/comparison] runs go to $OUTPUT/<dataset>/<method>/..., the table to
#                  $OUTPUT/comparison.md (+ .csv) and the figure to $OUTPUT/curves.png
#   FEATURES_MODE  [cached] image features from the feature store, shared by every method, shot
#                  count and seed (online: augment and encode every batch, as the references)
#   BACKBONE       [each recipe's own] MODEL.BACKBONE.NAME for every method
#   EXTRA_OPTS     more KEY VALUE overrides for every run (e.g. OPTIM.MAX_EPOCH 5 for a quick look)
#   PYTHON         [python]
# Each (dataset, method) runs as one sweep.py process (one CLIP load, shared features); finished
# runs are skipped and interrupted ones resume, so rerunning the script continues the comparison.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
. "$(dirname "${BASH_SOURCE[0]}")/taskres/grid.sh"

ALL_METHODS="ZeroshotCLIP LinearProbe CoOp CoCoOp CLIP_Adapter TipAdapter TipAdapterF TaskRes TaskResEnhanced"
DATA=$(require_data "${DATA:-}") || exit 2
DATASETS=$(grid_select dataset "${DATASETS:-$GRID_DATASETS}" "$GRID_DATASETS ${DG_TARGETS}")
METHODS=$(grid_select method "${METHODS:-$ALL_METHODS}" "$ALL_METHODS")
SHOTS=${SHOTS:-1 2 4 8 16}
SEEDS=${SEEDS:-1 2 3}
OUTPUT=$(from_caller "${OUTPUT:-output/comparison}")
FEATURES_MODE=${FEATURES_MODE:-cached}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"
read -r -a SHOT_LIST <<< "${SHOTS//,/ }"
read -r -a SEED_LIST <<< "${SEEDS//,/ }"

COMMON=(FEATURES.MODE "$FEATURES_MODE")
if [ -n "${BACKBONE:-}" ]; then COMMON+=(MODEL.BACKBONE.NAME "$BACKBONE"); fi
COMMON+=(${EXTRA[@]+"${EXTRA[@]}"})
FAILED=()

sweep() {  # DATASET TRAINER OUTPUT-DIR [more sweep/train.py args]
    local dataset=$1 trainer=$2 out=$3
    shift 3
    (cd "$REPO" && "${PY[@]}" sweep.py --shots "${SHOT_LIST[@]}" --seeds "${SEED_LIST[@]}" --recipe \
        --root "$DATA" --trainer "$trainer" --dataset-config-file "configs/datasets/$dataset.yaml" \
        --output-dir "$out" "$@" "${COMMON[@]}") || FAILED+=("$dataset/$trainer")
}

for DATASET in $DATASETS; do
    for METHOD in $METHODS; do
        echo "=== $DATASET: $METHOD"
        case $METHOD in
            ZeroshotCLIP)
                run_train "$OUTPUT/$DATASET/ZeroshotCLIP" --root "$DATA" --trainer ZeroshotCLIP \
                    --dataset-config-file "configs/datasets/$DATASET.yaml" \
                    --config-file configs/trainers/ZeroshotCLIP/rn50.yaml --output-dir "$OUTPUT/$DATASET/ZeroshotCLIP" \
                    --eval-only "${COMMON[@]}" || FAILED+=("$DATASET/ZeroshotCLIP")
                ;;
            TaskResEnhanced)
                # The enhanced base is produced per shot count (seed 1, as the published files).
                for K in "${SHOT_LIST[@]}"; do
                    BASE_DIR=$OUTPUT/$DATASET/TaskResEnhancedBase/${K}shots
                    run_train "$BASE_DIR" --root "$DATA" --seed 1 --trainer TaskResEnhancedBase \
                        --dataset-config-file "configs/datasets/$DATASET.yaml" \
                        --config-file configs/trainers/TaskResEnhancedBase/adam_lr1e-4_B256_ep50.yaml \
                        --output-dir "$BASE_DIR" DATASET.NUM_SHOTS "$K" "${COMMON[@]}" \
                        || { FAILED+=("$DATASET/TaskResEnhancedBase/$K"); continue; }
                    SHOT_LIST_SAVED=("${SHOT_LIST[@]}")
                    SHOT_LIST=("$K")
                    sweep "$DATASET" TaskRes "$OUTPUT/$DATASET/TaskRes" --enhanced-base "$BASE_DIR/strong_base.pth.tar"
                    SHOT_LIST=("${SHOT_LIST_SAVED[@]}")
                done
                ;;
            *)
                sweep "$DATASET" "$METHOD" "$OUTPUT/$DATASET/$METHOD"
                ;;
        esac
    done
done

(cd "$REPO" && "${PY[@]}" -m analysis.compare "$OUTPUT" --out "$OUTPUT/comparison.md" --csv "$OUTPUT/comparison.csv" \
    --figure "$OUTPUT/curves.png")
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "error: ${#FAILED[@]} part(s) failed: ${FAILED[*]} (rerun to resume)" >&2
    exit 1
fi
echo "Done: $OUTPUT/comparison.md, $OUTPUT/curves.png"
