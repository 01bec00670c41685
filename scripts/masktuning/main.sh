#!/usr/bin/env bash
# Train mask tuning (R-AMT) on one dataset for several seeds.
#
#   bash scripts/masktuning/main.sh DATASET SHOTS GDR_LAMBDA [DATA]
#
#   DATASET     name of a file in configs/datasets/ without .yaml (caltech101, imagenet, ...)
#   SHOTS       shots per class (the released settings are for 16)
#   GDR_LAMBDA  gradient dropout leak lambda (MASK.GDR_LAMBDA): 0 = plain AMT, 1 = full dropout
#   DATA        dataset root; the 4th argument wins over the DATA environment variable
#
# Output: $OUTPUT/DATASET/MaskTuning/CFG_SHOTSshots/lambdaGDR_LAMBDA/seedS
# Environment: SEEDS ("1 2 3"), CFG (a file of configs/trainers/MaskTuning/; default
# imagenet_vit_b16 for imagenet, vit_b16 otherwise), OUTPUT (output), BACKBONE
# (MODEL.BACKBONE.NAME override), EXTRA_OPTS (more KEY VALUE config overrides), PYTHON (python),
# DATA. A finished seed is skipped; an unfinished one is run again and resumes.
# See scripts/masktuning/README.md.
set -euo pipefail

usage() {
    echo "usage: bash scripts/masktuning/main.sh DATASET SHOTS GDR_LAMBDA [DATA]" >&2
}

if [ $# -lt 3 ] || [ $# -gt 4 ]; then
    usage
    exit 2
fi

DATASET=$1
SHOTS=$2
LAMBDA=$3
DATA=${4:-${DATA:-}}
SEEDS=${SEEDS:-1 2 3}
OUTPUT=${OUTPUT:-output}
BACKBONE=${BACKBONE:-}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

if [ "$DATASET" = "imagenet" ]; then CFG=${CFG:-imagenet_vit_b16}; else CFG=${CFG:-vit_b16}; fi
if [ -z "$DATA" ]; then
    echo "error: no dataset root given: set DATA=/path/to/datasets or pass it as the 4th argument" >&2
    usage
    exit 2
fi
DATA=$(require_data "$DATA") || exit 2
OUTPUT=$(from_caller "$OUTPUT")

DATASET_CFG=configs/datasets/${DATASET}.yaml
TRAINER_CFG=configs/trainers/MaskTuning/${CFG}.yaml
require_config "$DATASET_CFG" "$TRAINER_CFG" || exit 2

CFG_TAG=$CFG
OPTS=(DATASET.NUM_SHOTS "$SHOTS" MASK.GDR_LAMBDA "$LAMBDA")
if [ -n "$BACKBONE" ]; then
    CFG_TAG=${CFG}-$(backbone_tag "$BACKBONE")
    OPTS+=(MODEL.BACKBONE.NAME "$BACKBONE")
fi

for SEED in $SEEDS; do
    DIR=${OUTPUT}/${DATASET}/MaskTuning/${CFG_TAG}_${SHOTS}shots/lambda${LAMBDA}/seed${SEED}
    run_train "$DIR" \
        --root "$DATA" \
        --seed "$SEED" \
        --trainer MaskTuning \
        --dataset-config-file "$DATASET_CFG" \
        --config-file "$TRAINER_CFG" \
        --output-dir "$DIR" \
        "${OPTS[@]}" \
        ${EXTRA[@]+"${EXTRA[@]}"}
done
