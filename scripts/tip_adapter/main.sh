#!/usr/bin/env bash
# Run Tip-Adapter (training-free) or Tip-Adapter-F on one dataset for several seeds.
# Checks its arguments, then runs scripts/run.sh (the seed loop shared by every method).
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
CFG=${CFG:-$DATASET}
SEARCH_SPLIT=${SEARCH_SPLIT:-val}
EPOCH_SELECTION=${EPOCH_SELECTION:-val}

case $TRAINER in
    TipAdapter|TipAdapterF) ;;
    *) echo "error: TRAINER must be TipAdapter or TipAdapterF, got '$TRAINER'" >&2; usage; exit 2 ;;
esac
check_data 4th || exit 2

OPTS=(DATASET.NUM_SHOTS "$SHOTS" TRAINER.TIP.SEARCH_SPLIT "$SEARCH_SPLIT")
PROTOCOL=search_${SEARCH_SPLIT}
if [ "$TRAINER" = TipAdapterF ]; then
    OPTS+=(TRAINER.TIP.EPOCH_SELECTION "$EPOCH_SELECTION")
    PROTOCOL=${PROTOCOL}_epoch_${EPOCH_SELECTION}
fi
exec bash "$REPO/scripts/run.sh" "$TRAINER" "$DATASET" "$CFG" "$SHOTS" "$DATA" --variant "$PROTOCOL" -- "${OPTS[@]}"
