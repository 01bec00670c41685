#!/usr/bin/env bash
# The original's train.sh: R-AMT, 16 shots, seeds 1 2 3, on one dataset.
#
#   bash scripts/masktuning/train.sh DATASET [GDR_LAMBDA] [DATA]
#
#   GDR_LAMBDA  defaults to the per-dataset value (the MaskTuning recipe): 0.3, or
#               1.0 for imagenet, sun397 and food101 (and for every shot count but 16)
#   DATA        dataset root; the argument after GDR_LAMBDA wins over the DATA environment
#               variable (pass GDR_LAMBDA to give DATA as an argument)
#
# Runs scripts/masktuning/main.sh DATASET $SHOTS GDR_LAMBDA; same environment (SEEDS, CFG,
# OUTPUT, BACKBONE, EXTRA_OPTS, PYTHON, DATA), plus SHOTS (16).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

usage() {
    echo "usage: bash scripts/masktuning/train.sh DATASET [GDR_LAMBDA] [DATA]" >&2
}
check_nargs 1 3 $# || exit 2

DATASET=$1
SHOTS=${SHOTS:-16}

if [ $# -ge 2 ]; then
    LAMBDA=$2
else
    LAMBDA=$(cd "$REPO" && "${PY[@]}" -m engine.describe MaskTuning "$DATASET" "$SHOTS" --get MASK.GDR_LAMBDA) || exit 2
    echo "GDR lambda for $DATASET at $SHOTS shots: $LAMBDA"
fi
exec bash "$REPO/scripts/masktuning/main.sh" "$DATASET" "$SHOTS" "$LAMBDA" ${3:+"$3"}
