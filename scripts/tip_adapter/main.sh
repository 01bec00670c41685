#!/usr/bin/env bash
# Run Tip-Adapter (training-free) or Tip-Adapter-F on one dataset for several seeds.
#
#   bash scripts/tip_adapter/main.sh TRAINER DATASET SHOTS [DATA]
#
#   TRAINER  TipAdapter or TipAdapterF
#   DATASET  name of a file in configs/datasets/ without .yaml (caltech101, imagenet, ...); the
#            config is configs/trainers/$TRAINER/$DATASET.yaml (the reference's per-dataset
#            search ranges), unless CFG names another file of that folder
#   SHOTS    shots per class (1, 2, 4, 8, 16)
#   DATA     dataset root; the 4th argument wins over the DATA environment variable
#
# Environment: SEEDS ("1 2 3"), OUTPUT (output), CFG ($DATASET), SEARCH_SPLIT (val: where beta
# and alpha are searched; test is the other choice), EPOCH_SELECTION (TipAdapterF: val, test = the
# reference's protocol, or last), BACKBONE, EXTRA_OPTS, PYTHON, DATA.
# See scripts/tip_adapter/README.md.
set -euo pipefail

usage() {
    echo "usage: bash scripts/tip_adapter/main.sh TRAINER DATASET SHOTS [DATA]" >&2
    echo "       (TRAINER is TipAdapter or TipAdapterF; DATA may also come from \$DATA)" >&2
}

if [ $# -lt 3 ] || [ $# -gt 4 ]; then
    usage
    exit 2
fi

TRAINER=$1
DATASET=$2
SHOTS=$3
DATA=${4:-${DATA:-}}
SEEDS=${SEEDS:-1 2 3}
OUTPUT=${OUTPUT:-output}
CFG=${CFG:-$DATASET}
SEARCH_SPLIT=${SEARCH_SPLIT:-val}
EPOCH_SELECTION=${EPOCH_SELECTION:-val}
BACKBONE=${BACKBONE:-}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

case $TRAINER in
    TipAdapter|TipAdapterF) ;;
    *) echo "error: TRAINER must be TipAdapter or TipAdapterF, got '$TRAINER'" >&2; usage; exit 2 ;;
esac
if [ -z "$DATA" ]; then
    echo "error: no dataset root given: set DATA=/path/to/datasets or pass it as the 4th argument" >&2
    usage
    exit 2
fi
DATA=$(require_data "$DATA") || exit 2
OUTPUT=$(from_caller "$OUTPUT")

DATASET_CFG=configs/datasets/${DATASET}.yaml
TRAINER_CFG=configs/trainers/${TRAINER}/${CFG}.yaml
require_config "$DATASET_CFG" "$TRAINER_CFG" || exit 2

CFG_TAG=$CFG
OPTS=(DATASET.NUM_SHOTS "$SHOTS" TRAINER.TIP.SEARCH_SPLIT "$SEARCH_SPLIT")
PROTOCOL=search_${SEARCH_SPLIT}
if [ "$TRAINER" = TipAdapterF ]; then
    OPTS+=(TRAINER.TIP.EPOCH_SELECTION "$EPOCH_SELECTION")
    PROTOCOL=${PROTOCOL}_epoch_${EPOCH_SELECTION}
fi
if [ -n "$BACKBONE" ]; then
    CFG_TAG=${CFG}-$(backbone_tag "$BACKBONE")
    OPTS+=(MODEL.BACKBONE.NAME "$BACKBONE")
fi

# A finished seed is skipped; anything else is (re)run (Tip-Adapter-F resumes from its checkpoint).
for SEED in $SEEDS; do
    DIR=${OUTPUT}/${DATASET}/${TRAINER}/${CFG_TAG}_${SHOTS}shots/${PROTOCOL}/seed${SEED}
    run_train "$DIR" \
        --root "$DATA" \
        --seed "$SEED" \
        --trainer "$TRAINER" \
        --dataset-config-file "$DATASET_CFG" \
        --config-file "$TRAINER_CFG" \
        --output-dir "$DIR" \
        "${OPTS[@]}" \
        ${EXTRA[@]+"${EXTRA[@]}"}
done
