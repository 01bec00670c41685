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
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

usage() {
    echo "usage: bash scripts/linear_probe/main.sh DATASET CFG SHOTS [DATA]" >&2
    echo "       (DATA may also come from \$DATA)" >&2
}
check_nargs 3 4 $# || exit 2

DATASET=$1
CFG=$2
SHOTS=$3
DATA=${4:-${DATA:-}}
SEEDS=${SEEDS:-1 2 3}
OUTPUT=${OUTPUT:-output}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"

check_data 4th || exit 2
OUTPUT=$(from_caller "$OUTPUT")

DATASET_CFG=configs/datasets/${DATASET}.yaml
TRAINER_CFG=configs/trainers/LinearProbe/${CFG}.yaml
require_config "$DATASET_CFG" "$TRAINER_CFG" || exit 2

OPTS=(DATASET.NUM_SHOTS "$SHOTS")
backbone_override "$CFG"  # $BACKBONE: folder CFG-<tag>, MODEL.BACKBONE.NAME in OPTS

# Each seed of $SEEDS: skipped when finished, else (re)run (the fit takes no epochs).
run_seeds "${OUTPUT}/${DATASET}/LinearProbe/${CFG_TAG}_${SHOTS}shots/seed{seed}" \
    --root "$DATA" \
    --seed {seed} \
    --trainer LinearProbe \
    --dataset-config-file "$DATASET_CFG" \
    --config-file "$TRAINER_CFG" \
    --output-dir {dir} \
    "${OPTS[@]}" \
    ${EXTRA[@]+"${EXTRA[@]}"}
