#!/usr/bin/env bash
# CoCoOp base-to-new generalization, step 2: evaluate the model trained by base2new_train.sh on
# the new classes (the second half of the sorted labels), one seed (CoCoOp's
# scripts/cocoop/base2new_test.sh). No training: the same checkpoint, the new class names.
#
#   bash scripts/cocoop/base2new_test.sh DATASET SEED [DATA]
#
# Loads $OUTPUT/base2new/train_base/DATASET/shots_SHOTS/CoCoOp/CFG/seedSEED
#       (prompt_learner/model.pth.tar-LOAD_EPOCH)
# and writes $OUTPUT/base2new/test_SUB/DATASET/shots_SHOTS/CoCoOp/CFG/seedSEED.
# Environment: CFG (vit_b16_c4_ep10_batch1_ctxv1), SHOTS (16), LOAD_EPOCH (10), SUB (new; "base"
# re-evaluates the base classes, "all" all of them), OUTPUT (output), EXTRA_OPTS, PYTHON, DATA.
# A folder that already holds results.json is skipped.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

usage() {
    echo "usage: bash scripts/cocoop/base2new_test.sh DATASET SEED [DATA]" >&2
}
check_nargs 2 3 $# || exit 2

DATASET=$1
SEED=$2
DATA=${3:-${DATA:-}}
CFG=${CFG:-vit_b16_c4_ep10_batch1_ctxv1}
SHOTS=${SHOTS:-16}
LOAD_EPOCH=${LOAD_EPOCH:-10}
SUB=${SUB:-new}
OUTPUT=${OUTPUT:-output}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"

case $SUB in
    all|base|new) ;;
    *) echo "error: SUB must be all, base or new, got '$SUB'" >&2; exit 2 ;;
esac
check_data 3rd || exit 2
OUTPUT=$(from_caller "$OUTPUT")

DATASET_CFG=configs/datasets/${DATASET}.yaml
TRAINER_CFG=configs/trainers/CoCoOp/${CFG}.yaml
require_config "$DATASET_CFG" "$TRAINER_CFG" || exit 2

MODEL_DIR=${OUTPUT}/base2new/train_base/${DATASET}/shots_${SHOTS}/CoCoOp/${CFG}/seed${SEED}
DIR=${OUTPUT}/base2new/test_${SUB}/${DATASET}/shots_${SHOTS}/CoCoOp/${CFG}/seed${SEED}
CKPT=$MODEL_DIR/prompt_learner/model.pth.tar-$LOAD_EPOCH
require_checkpoint "$CKPT" \
    "error: checkpoint not found: $CKPT" \
    "Train on the base classes first:" \
    "  bash scripts/cocoop/base2new_train.sh $DATASET $SEED $DATA" \
    "(or set LOAD_EPOCH to the epoch of the checkpoint you have)" || exit 2
# A finished evaluation (results.json) is skipped.
run_eval "$DIR" \
    --root "$DATA" \
    --seed "$SEED" \
    --trainer CoCoOp \
    --dataset-config-file "$DATASET_CFG" \
    --config-file "$TRAINER_CFG" \
    --output-dir "$DIR" \
    --model-dir "$MODEL_DIR" \
    --load-epoch "$LOAD_EPOCH" \
    --eval-only \
    DATASET.NUM_SHOTS "$SHOTS" \
    DATASET.SUBSAMPLE_CLASSES "$SUB" \
    ${EXTRA[@]+"${EXTRA[@]}"}
