#!/usr/bin/env bash
# Fit the linear probe (CoOp's lpclip protocol) on one dataset for several seeds.
#
#   bash scripts/linear_probe/main.sh DATASET CFG SHOTS [DATA]
#
#   DATASET  name of a file in configs/datasets/ without .yaml (caltech101, imagenet, ...)
#   CFG      name of a file in configs/trainers/LinearProbe/ without .yaml (rn50, vit_b16, ...)
#   SHOTS    shots per class (1, 2, 4, 8, 16)
#   DATA     dataset root; the 4th argument wins over the DATA environment variable
#
# Environment: SEEDS ("1 2 3"), OUTPUT (output), BACKBONE (MODEL.BACKBONE.NAME override),
# EXTRA_OPTS (more KEY VALUE config overrides), PYTHON (python), DATA.
# See scripts/linear_probe/README.md.
set -euo pipefail

usage() {
    echo "usage: bash scripts/linear_probe/main.sh DATASET CFG SHOTS [DATA]" >&2
    echo "       (DATA may also come from \$DATA)" >&2
}

if [ $# -lt 3 ] || [ $# -gt 4 ]; then
    usage
    exit 2
fi

DATASET=$1
CFG=$2
SHOTS=$3
DATA=${4:-${DATA:-}}
SEEDS=${SEEDS:-1 2 3}
OUTPUT=${OUTPUT:-output}
BACKBONE=${BACKBONE:-}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

if [ -z "$DATA" ]; then
    echo "error: no dataset root given: set DATA=/path/to/datasets or pass it as the 4th argument" >&2
    usage
    exit 2
fi
DATA=$(require_data "$DATA") || exit 2
OUTPUT=$(from_caller "$OUTPUT")

DATASET_CFG=configs/datasets/${DATASET}.yaml
TRAINER_CFG=configs/trainers/LinearProbe/${CFG}.yaml
require_config "$DATASET_CFG" "$TRAINER_CFG" || exit 2

CFG_TAG=$CFG
OPTS=(DATASET.NUM_SHOTS "$SHOTS")
if [ -n "$BACKBONE" ]; then
    CFG_TAG=${CFG}-$(backbone_tag "$BACKBONE")
    OPTS+=(MODEL.BACKBONE.NAME "$BACKBONE")
fi

# A finished seed is skipped; anything else is (re)run (the fit takes no epochs).
for SEED in $SEEDS; do
    DIR=${OUTPUT}/${DATASET}/LinearProbe/${CFG_TAG}_${SHOTS}shots/seed${SEED}
    run_train "$DIR" \
        --root "$DATA" \
        --seed "$SEED" \
        --trainer LinearProbe \
        --dataset-config-file "$DATASET_CFG" \
        --config-file "$TRAINER_CFG" \
        --output-dir "$DIR" \
        "${OPTS[@]}" \
        ${EXTRA[@]+"${EXTRA[@]}"}
done
