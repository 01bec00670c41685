#!/usr/bin/env bash
# Base-to-new generalization for any method, in the reference layout: train on the base half of the
# classes (DATASET.SUBSAMPLE_CLASSES base), evaluate the same checkpoint on the new half.
#
#   bash scripts/base2new.sh train METHOD DATASET SEED [DATA]
#   bash scripts/base2new.sh test  METHOD DATASET SEED [DATA]
#   python parse_test_res.py $OUTPUT/base2new --base2new        # base, new, harmonic mean
#
#   METHOD   a registered method with a recipe (python -m engine.describe --list); an
#            evaluation-only one is evaluated on base by `train`, on new by `test` (nothing trained)
# Folders: $OUTPUT/base2new/train_base/DATASET/shots_K/METHOD/CFG/seedS and .../test_new/...
# Methods with per-class parameters use the zero-shot classifier for the new classes (recorded in
# results.json as extras.unseen_classes_zeroshot).
# Environment: SHOTS (16), OUTPUT (output), BACKBONE, EXTRA_OPTS, PYTHON, DATA.
set -euo pipefail

usage() {
    echo "usage: bash scripts/base2new.sh train|test METHOD DATASET SEED [DATA]" >&2
}
if [ $# -lt 4 ] || [ $# -gt 5 ] || { [ "$1" != train ] && [ "$1" != test ]; }; then
    usage
    exit 2
fi
PHASE=$1
METHOD=$2
DATASET=$3
SEED=$4
DATA=${5:-${DATA:-}}
SHOTS=${SHOTS:-16}
OUTPUT=${OUTPUT:-output}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DATA=$(require_data "$DATA") || { usage; exit 2; }
OUTPUT=$(from_caller "$OUTPUT")
DATASET_CFG=configs/datasets/${DATASET}.yaml
require_config "$DATASET_CFG" || exit 2

# The method's recipe for this dataset and shot count (its config file and overrides), and
# whether it is evaluated only (then nothing is trained: `train` evaluates the base classes).
describe_method "$METHOD" "$DATASET" "$SHOTS" || exit 2
CONFIG=${FACTS[config]}
OPTS=(${RECIPE_OPTS[@]+"${RECIPE_OPTS[@]}"})
EVAL_ONLY=${FACTS[evaluation_only]}
require_config "$CONFIG" || exit 2
# $BACKBONE: folder CFG-<tag> and MODEL.BACKBONE.NAME in OPTS.
backbone_override "$(basename "$CONFIG" .yaml)"
CFG=$CFG_TAG

TRAIN_DIR=${OUTPUT}/base2new/train_base/${DATASET}/shots_${SHOTS}/${METHOD}/${CFG}/seed${SEED}
TEST_DIR=${OUTPUT}/base2new/test_new/${DATASET}/shots_${SHOTS}/${METHOD}/${CFG}/seed${SEED}
COMMON=(--root "$DATA" --seed "$SEED" --trainer "$METHOD" --dataset-config-file "$DATASET_CFG"
        --config-file "$CONFIG" DATASET.NUM_SHOTS "$SHOTS" ${OPTS[@]+"${OPTS[@]}"})

if [ "$PHASE" = train ]; then
    EVAL=()
    if [ "$EVAL_ONLY" = true ]; then EVAL=(--eval-only); fi
    run_train "$TRAIN_DIR" "${COMMON[@]}" --output-dir "$TRAIN_DIR" ${EVAL[@]+"${EVAL[@]}"} \
        DATASET.SUBSAMPLE_CLASSES base ${EXTRA[@]+"${EXTRA[@]}"}
else
    MODEL=()
    if [ "$EVAL_ONLY" != true ]; then
        if ! finished "$TRAIN_DIR"; then
            echo "error: no finished base-class run at $TRAIN_DIR; run: bash scripts/base2new.sh train $METHOD $DATASET $SEED" >&2
            exit 2
        fi
        MODEL=(--model-dir "$TRAIN_DIR")
    fi
    run_train "$TEST_DIR" "${COMMON[@]}" --output-dir "$TEST_DIR" --eval-only ${MODEL[@]+"${MODEL[@]}"} \
        DATASET.SUBSAMPLE_CLASSES new ${EXTRA[@]+"${EXTRA[@]}"}
fi
