#!/usr/bin/env bash
# Train CLIP-Adapter on one dataset for several seeds.
#
#   bash scripts/clip_adapter/main.sh DATASET CFG SHOTS RATIO [DATA]
#
#   DATASET  name of a file in configs/datasets/ without .yaml (caltech101, imagenet, ...)
#   CFG      name of a file in configs/trainers/CLIP_Adapter/ without .yaml (rn50, rn50_ep100, ...)
#   SHOTS    shots per class (1, 2, 4, 8, 16)
#   RATIO    residual ratio (TRAINER.CLIP_ADAPTER.RATIO; the reference's is 0.2)
#   DATA     dataset root; the 5th argument wins over the DATA environment variable
#
# Environment: SEEDS ("1 2 3"), OUTPUT (output), BACKBONE (MODEL.BACKBONE.NAME override),
# EXTRA_OPTS (more KEY VALUE config overrides), PYTHON (python), DATA.
# See scripts/clip_adapter/README.md.
set -euo pipefail

usage() {
    echo "usage: bash scripts/clip_adapter/main.sh DATASET CFG SHOTS RATIO [DATA]" >&2
    echo "       (DATA may also come from \$DATA)" >&2
}

if [ $# -lt 4 ] || [ $# -gt 5 ]; then
    usage
    exit 2
fi

DATASET=$1
CFG=$2
SHOTS=$3
RATIO=$4
DATA=${5:-${DATA:-}}
SEEDS=${SEEDS:-1 2 3}
OUTPUT=${OUTPUT:-output}
BACKBONE=${BACKBONE:-}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

if [ -z "$DATA" ]; then
    echo "error: no dataset root given: set DATA=/path/to/datasets or pass it as the 5th argument" >&2
    usage
    exit 2
fi
DATA=$(require_data "$DATA") || exit 2
OUTPUT=$(from_caller "$OUTPUT")

DATASET_CFG=configs/datasets/${DATASET}.yaml
TRAINER_CFG=configs/trainers/CLIP_Adapter/${CFG}.yaml
require_config "$DATASET_CFG" "$TRAINER_CFG" || exit 2

# A backbone override gets its own folder so that it never mixes with the config's backbone.
CFG_TAG=$CFG
OPTS=(DATASET.NUM_SHOTS "$SHOTS" TRAINER.CLIP_ADAPTER.RATIO "$RATIO")
if [ -n "$BACKBONE" ]; then
    CFG_TAG=${CFG}-$(backbone_tag "$BACKBONE")
    OPTS+=(MODEL.BACKBONE.NAME "$BACKBONE")
fi

# A finished seed (results.json, or a log with the final result) is skipped; anything else is
# (re)started and train.py resumes from the checkpoint in the folder.
for SEED in $SEEDS; do
    DIR=${OUTPUT}/${DATASET}/CLIP_Adapter/${CFG_TAG}_${SHOTS}shots/ratio${RATIO}/seed${SEED}
    run_train "$DIR" \
        --root "$DATA" \
        --seed "$SEED" \
        --trainer CLIP_Adapter \
        --dataset-config-file "$DATASET_CFG" \
        --config-file "$TRAINER_CFG" \
        --output-dir "$DIR" \
        "${OPTS[@]}" \
        ${EXTRA[@]+"${EXTRA[@]}"}
done
