#!/usr/bin/env bash
# Base-to-new generalization, step 1 (the original's base2new_train.sh): train R-AMT on the
# base classes (the first half of the sorted labels), 16 shots, seeds 1 2 3. GDR lambda is the
# config's (1.0), as in the original script.
#
#   bash scripts/masktuning/base2new_train.sh DATASET [DATA]
#
# Output: $OUTPUT/base2new/train_base/DATASET/shots_SHOTS/MaskTuning/CFG/seedS; then run
# base2new_eval.sh DATASET. Environment: SEEDS ("1 2 3"), SHOTS (16), CFG, OUTPUT (output),
# EXTRA_OPTS, PYTHON, DATA. A finished seed is skipped; an unfinished one resumes.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

usage() {
    echo "usage: bash scripts/masktuning/base2new_train.sh DATASET [DATA]" >&2
}
check_nargs 1 2 $# || exit 2

DATASET=$1
DATA=${2:-${DATA:-}}
SEEDS=${SEEDS:-1 2 3}
SHOTS=${SHOTS:-16}
OUTPUT=${OUTPUT:-output}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"

if [ "$DATASET" = "imagenet" ]; then CFG=${CFG:-imagenet_vit_b16}; else CFG=${CFG:-vit_b16}; fi
check_data 2nd || exit 2
OUTPUT=$(from_caller "$OUTPUT")

DATASET_CFG=configs/datasets/${DATASET}.yaml
TRAINER_CFG=configs/trainers/MaskTuning/${CFG}.yaml
require_config "$DATASET_CFG" "$TRAINER_CFG" || exit 2

# Each seed of $SEEDS: skipped when finished, else (re)run; train.py resumes from its checkpoint.
run_seeds "${OUTPUT}/base2new/train_base/${DATASET}/shots_${SHOTS}/MaskTuning/${CFG}/seed{seed}" \
    --root "$DATA" \
    --seed {seed} \
    --trainer MaskTuning \
    --dataset-config-file "$DATASET_CFG" \
    --config-file "$TRAINER_CFG" \
    --output-dir {dir} \
    DATASET.NUM_SHOTS "$SHOTS" \
    DATASET.SUBSAMPLE_CLASSES base \
    TEST.FINAL_MODEL last_step \
    ${EXTRA[@]+"${EXTRA[@]}"}
