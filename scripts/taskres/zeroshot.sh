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

usage() {
    echo "usage: bash scripts/taskres/zeroshot.sh DATASET CFG [DATA]" >&2
}

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    usage
    exit 2
fi

DATASET=$1
CFG=$2
DATA=${3:-${DATA:-}}
OUTPUT=${OUTPUT:-output}
TRAINER=${TRAINER:-ZeroshotCLIP2}
read -r -a PY <<< "${PYTHON:-python}"
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
CALLER=$(pwd -P)
from_caller() {
    case $1 in
        /*) printf '%s\n' "$1" ;;
        *) if [ "$CALLER" = "$REPO" ]; then printf '%s\n' "$1"; else printf '%s\n' "$CALLER/$1"; fi ;;
    esac
}

if [ -z "$DATA" ]; then
    echo "error: no dataset root given: set DATA=/path/to/datasets or pass it as the 3rd argument" >&2
    usage
    exit 2
fi
DATA=$(from_caller "$DATA")
OUTPUT=$(from_caller "$OUTPUT")
if [ ! -d "$DATA" ]; then
    echo "error: dataset root $DATA is not a folder" >&2
    exit 2
fi

cd "$REPO"
DATASET_CFG=configs/datasets/${DATASET}.yaml
TRAINER_CFG=configs/trainers/ZeroshotCLIP/${CFG}.yaml
for f in "$DATASET_CFG" "$TRAINER_CFG"; do
    if [ ! -f "$f" ]; then
        echo "error: $f not found; available: $(cd "$(dirname "$f")" && ls -- *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
        exit 2
    fi
done

DIR=${OUTPUT}/${TRAINER}/${CFG}/${DATASET}
echo "Run: ${DIR}"
"${PY[@]}" train.py \
    --root "$DATA" \
    --trainer "$TRAINER" \
    --dataset-config-file "$DATASET_CFG" \
    --config-file "$TRAINER_CFG" \
    --output-dir "$DIR" \
    --eval-only \
    ${EXTRA[@]+"${EXTRA[@]}"}
