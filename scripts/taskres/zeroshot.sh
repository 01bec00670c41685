#!/usr/bin/env bash
# Evaluate zero-shot CLIP with prompt ensembling (ZeroshotCLIP2) on one dataset.
#
#   bash scripts/taskres/zeroshot.sh DATASET CFG [DATA]
#
#   DATASET  name of a file in configs/datasets/ without .yaml
#   CFG      name of a file in configs/trainers/ZeroshotCLIP/ without .yaml (rn50, rn101, vit_b32, vit_b16)
#   DATA     dataset root; the 3rd argument wins over the DATA environment variable
#
# Environment: OUTPUT (output), TRAINER (ZeroshotCLIP2; ZeroshotCLIP uses one template per
# dataset), EXTRA_OPTS (more KEY VALUE config overrides), PYTHON (python), DATA.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

usage() {
    echo "usage: bash scripts/taskres/zeroshot.sh DATASET CFG [DATA]" >&2
}
check_nargs 2 3 $# || exit 2

DATASET=$1
CFG=$2
DATA=${3:-${DATA:-}}
OUTPUT=${OUTPUT:-output}
TRAINER=${TRAINER:-ZeroshotCLIP2}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"

check_data 3rd || exit 2
OUTPUT=$(from_caller "$OUTPUT")

DATASET_CFG=configs/datasets/${DATASET}.yaml
TRAINER_CFG=configs/trainers/ZeroshotCLIP/${CFG}.yaml
require_config "$DATASET_CFG" "$TRAINER_CFG" || exit 2

# Always evaluated again (zeroshot_all.sh skips the datasets that have results.json).
DIR=${OUTPUT}/${TRAINER}/${CFG}/${DATASET}
echo "Run: ${DIR}"
(cd "$REPO" && "${PY[@]}" train.py \
    --root "$DATA" \
    --trainer "$TRAINER" \
    --dataset-config-file "$DATASET_CFG" \
    --config-file "$TRAINER_CFG" \
    --output-dir "$DIR" \
    --eval-only \
    ${EXTRA[@]+"${EXTRA[@]}"})
