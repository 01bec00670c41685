#!/usr/bin/env bash
# Train mask tuning (R-AMT) on one dataset for several seeds.
# Checks its arguments, then runs scripts/run.sh (the seed loop shared by every method).
#
#   bash scripts/masktuning/main.sh DATASET SHOTS GDR_LAMBDA [DATA]
#
#   DATASET     name of a file in configs/datasets/ without .yaml (caltech101, imagenet, ...)
#   SHOTS       shots per class (the released settings are for 16)
#   GDR_LAMBDA  gradient dropout leak lambda (MASK.GDR_LAMBDA): 0 = plain AMT, 1 = full dropout
#   DATA        dataset root; the 4th argument wins over the DATA environment variable
#
# Output: $OUTPUT/DATASET/TRAINER/CFG_SHOTSshots/lambdaGDR_LAMBDA/seedS
# Environment: TRAINER (MaskTuning; CoOpMaskTuning trains CoOp's context with the masks), SEEDS
# ("1 2 3"), CFG (a file of configs/trainers/TRAINER/; default imagenet_vit_b16 for imagenet,
# vit_b16 otherwise), OUTPUT (output), BACKBONE
# (MODEL.BACKBONE.NAME override), EXTRA_OPTS (more KEY VALUE config overrides), PYTHON (python),
# DATA. A finished seed is skipped; an unfinished one is run again and resumes.
# See scripts/masktuning/README.md.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

usage() {
    echo "usage: bash scripts/masktuning/main.sh DATASET SHOTS GDR_LAMBDA [DATA]" >&2
}
check_nargs 3 4 $# || exit 2

DATASET=$1
SHOTS=$2
LAMBDA=$3
DATA=${4:-${DATA:-}}
TRAINER=${TRAINER:-MaskTuning}

case $TRAINER in
    MaskTuning|CoOpMaskTuning) ;;
    *) echo "error: TRAINER must be MaskTuning or CoOpMaskTuning, got '$TRAINER'" >&2; usage; exit 2 ;;
esac

if [ "$DATASET" = "imagenet" ]; then CFG=${CFG:-imagenet_vit_b16}; else CFG=${CFG:-vit_b16}; fi
check_data 4th || exit 2

exec bash "$REPO/scripts/run.sh" "$TRAINER" "$DATASET" "$CFG" "$SHOTS" "$DATA" --variant "lambda${LAMBDA}" -- \
    DATASET.NUM_SHOTS "$SHOTS" MASK.GDR_LAMBDA "$LAMBDA"
