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
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

usage() {
    echo "usage: bash scripts/tip_adapter/main.sh TRAINER DATASET SHOTS [DATA]" >&2
    echo "       (TRAINER is TipAdapter or TipAdapterF; DATA may also come from \$DATA)" >&2
}
check_nargs 3 4 $# || exit 2

TRAINER=$1
DATASET=$2
SHOTS=$3
DATA=${4:-${DATA:-}}
SEEDS=${SEEDS:-1 2 3}
OUTPUT=${OUTPUT:-output}
CFG=${CFG:-$DATASET}
SEARCH_SPLIT=${SEARCH_SPLIT:-val}
EPOCH_SELECTION=${EPOCH_SELECTION:-val}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"

case $TRAINER in
    TipAdapter|TipAdapterF) ;;
    *) echo "error: TRAINER must be TipAdapter or TipAdapterF, got '$TRAINER'" >&2; usage; exit 2 ;;
esac
check_data 4th || exit 2
OUTPUT=$(from_caller "$OUTPUT")

DATASET_CFG=configs/datasets/${DATASET}.yaml
TRAINER_CFG=configs/trainers/${TRAINER}/${CFG}.yaml
require_config "$DATASET_CFG" "$TRAINER_CFG" || exit 2

OPTS=(DATASET.NUM_SHOTS "$SHOTS" TRAINER.TIP.SEARCH_SPLIT "$SEARCH_SPLIT")
PROTOCOL=search_${SEARCH_SPLIT}
if [ "$TRAINER" = TipAdapterF ]; then
    OPTS+=(TRAINER.TIP.EPOCH_SELECTION "$EPOCH_SELECTION")
    PROTOCOL=${PROTOCOL}_epoch_${EPOCH_SELECTION}
fi
backbone_override "$CFG"  # $BACKBONE: folder CFG-<tag>, MODEL.BACKBONE.NAME in OPTS

# Each seed of $SEEDS: skipped when finished, else (re)run (Tip-Adapter-F resumes from its
# checkpoint).
run_seeds "${OUTPUT}/${DATASET}/${TRAINER}/${CFG_TAG}_${SHOTS}shots/${PROTOCOL}/seed{seed}" \
    --root "$DATA" \
    --seed {seed} \
    --trainer "$TRAINER" \
    --dataset-config-file "$DATASET_CFG" \
    --config-file "$TRAINER_CFG" \
    --output-dir {dir} \
    "${OPTS[@]}" \
    ${EXTRA[@]+"${EXTRA[@]}"}
