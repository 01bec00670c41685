#!/usr/bin/env bash
# Cross-dataset transfer, step 2 (the conditional-prompt paper's xd_test.sh, for any registered
# method): evaluate the ImageNet model of scripts/xd_train.sh on a target dataset, without training.
#
#   bash scripts/xd_test.sh METHOD DATASET SEED [DATA]
#
#   DATASET  the target: a file in configs/datasets/ without .yaml (caltech101, ..., ucf101)
# Loads $OUTPUT/imagenet/METHOD/CFG_SHOTSshots/seedSEED (its deployed model) and writes
#   $OUTPUT/evaluation/METHOD/CFG_SHOTSshots/DATASET/seedSEED
# with the source's config (its recipe for ImageNet). What transfers is what the method learned
# that is not tied to a class: a prompt context, an adapter, masks; rows, columns or residuals of
# ImageNet's classes have no counterpart among the target's classes, whose parameters are the
# method's zero-shot initialisation (its zero-shot CLIP classifier). The result inherits the
# source run's selection tier. An evaluation-only method is evaluated on the target directly.
# Environment: SHOTS (16), SOURCE (imagenet), OUTPUT (output), BACKBONE, EXTRA_OPTS, PYTHON, DATA.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    echo "usage: bash scripts/xd_test.sh METHOD DATASET SEED [DATA]" >&2
}
check_nargs 3 4 $# || exit 2

METHOD=$1
DATASET=$2
SEED=$3
DATA=${4:-${DATA:-}}
SHOTS=${SHOTS:-16}
SOURCE=${SOURCE:-imagenet}
OUTPUT=${OUTPUT:-output}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"

check_data 4th || exit 2
OUTPUT=$(from_caller "$OUTPUT")
describe_method "$METHOD" "$SOURCE" "$SHOTS" || exit 2
TRAINER_CFG=${FACTS[config]}
CFG=${FACTS[cfg]}
DATASET_CFG=configs/datasets/${DATASET}.yaml
require_config "$DATASET_CFG" "$TRAINER_CFG" || exit 2
OPTS=()
backbone_override "$CFG"

MODEL=()
if [ "${FACTS[evaluation_only]}" != true ]; then
    MODEL_DIR=$OUTPUT/$SOURCE/$METHOD/${CFG_TAG}_${SHOTS}shots/seed$SEED
    finished "$MODEL_DIR" || {
        echo "error: no finished $SOURCE run at $MODEL_DIR; train it first:" >&2
        echo "  bash scripts/xd_train.sh $METHOD $SEED $DATA" >&2
        exit 2
    }
    MODEL=(--model-dir "$MODEL_DIR")
    OPTS+=(TEST.CROSS_DATASET True)  # rows of the source's classes fall back to zero-shot on the target
fi
DIR=$OUTPUT/evaluation/$METHOD/${CFG_TAG}_${SHOTS}shots/$DATASET/seed$SEED
run_eval "$DIR" \
    --root "$DATA" \
    --seed "$SEED" \
    --trainer "$METHOD" \
    --dataset-config-file "$DATASET_CFG" \
    --config-file "$TRAINER_CFG" \
    --output-dir "$DIR" \
    ${MODEL[@]+"${MODEL[@]}"} \
    --eval-only \
    ${RECIPE_OPTS[@]+"${RECIPE_OPTS[@]}"} \
    ${OPTS[@]+"${OPTS[@]}"} \
    ${EXTRA[@]+"${EXTRA[@]}"}
