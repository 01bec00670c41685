#!/usr/bin/env bash
# CoCoOp base-to-new generalization, step 1: train on the base classes (the first half of the
# sorted labels) of one dataset, one seed (CoCoOp's scripts/cocoop/base2new_train.sh).
#
#   bash scripts/cocoop/base2new_train.sh DATASET SEED [DATA]
#
#   DATASET  name of a file in configs/datasets/ without .yaml (caltech101, imagenet, ...)
#   SEED     1, 2, 3, ...
#   DATA     dataset root; the 3rd argument wins over the DATA environment variable
#
# Output: $OUTPUT/base2new/train_base/DATASET/shots_SHOTS/CoCoOp/CFG/seedSEED, as CoCoOp's
# script; then run base2new_test.sh with the same DATASET and SEED.
# Environment: CFG (vit_b16_c4_ep10_batch1_ctxv1; a file of configs/trainers/CoCoOp/), SHOTS (16),
# OUTPUT (output), EXTRA_OPTS (more KEY VALUE config overrides), PYTHON (python), DATA.
# A finished run is skipped; an unfinished one is run again and resumes from its checkpoint.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

usage() {
    echo "usage: bash scripts/cocoop/base2new_train.sh DATASET SEED [DATA]" >&2
}
check_nargs 2 3 $# || exit 2

DATASET=$1
SEED=$2
DATA=${3:-${DATA:-}}
CFG=${CFG:-vit_b16_c4_ep10_batch1_ctxv1}
SHOTS=${SHOTS:-16}
OUTPUT=${OUTPUT:-output}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"

check_data 3rd || exit 2
OUTPUT=$(from_caller "$OUTPUT")

DATASET_CFG=configs/datasets/${DATASET}.yaml
TRAINER_CFG=configs/trainers/CoCoOp/${CFG}.yaml
require_config "$DATASET_CFG" "$TRAINER_CFG" || exit 2

# One seed, as CoCoOp's script: skipped when finished, else (re)run and resumed.
DIR=${OUTPUT}/base2new/train_base/${DATASET}/shots_${SHOTS}/CoCoOp/${CFG}/seed${SEED}
run_train "$DIR" \
    --root "$DATA" \
    --seed "$SEED" \
    --trainer CoCoOp \
    --dataset-config-file "$DATASET_CFG" \
    --config-file "$TRAINER_CFG" \
    --output-dir "$DIR" \
    DATASET.NUM_SHOTS "$SHOTS" \
    DATASET.SUBSAMPLE_CLASSES base \
    ${EXTRA[@]+"${EXTRA[@]}"}
