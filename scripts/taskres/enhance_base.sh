#!/usr/bin/env bash
# Produce the enhanced base (tuned text projection) of one dataset and shot count, and install it
# where train_enhance.sh and main.sh look for it.
#
#   bash scripts/taskres/enhance_base.sh DATASET SHOTS [DATA]
#
#   DATASET  name of a file in configs/datasets/ without .yaml
#   SHOTS    shots per class
#   DATA     dataset root; the 3rd argument wins over the DATA environment variable
#
# Runs (seed 1)
#   python train.py --root DATA --seed 1 --trainer TaskResEnhancedBase
#       --dataset-config-file configs/datasets/DATASET.yaml
#       --config-file configs/trainers/TaskResEnhancedBase/$ENHANCE_CFG.yaml
#       --output-dir $OUTPUT/enhanced_base/DATASET/<tag>_<K>shots DATASET.NUM_SHOTS K
#       [MODEL.BACKBONE.NAME $BACKBONE] [$EXTRA_OPTS]
# and copies <output-dir>/strong_base.pth.tar to
#   $STRONG_BASE/<DATASET.NAME>/<tag>_<K>shots/model.pth.tar
# (<tag>: the backbone lowercased without '/' and '-': rn50, vitb16). Nothing is run when that
# file exists; only the copy is made when the training folder already holds strong_base.pth.tar.
#
# Environment: OUTPUT (output), STRONG_BASE (strong_base), BACKBONE (RN50; anything else is
# passed as MODEL.BACKBONE.NAME), ENHANCE_CFG (adam_lr1e-4_B256_ep50, or the path of a .yaml),
# SEED (1), PYTHON (python), EXTRA_OPTS, DATA.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/grid.sh"

usage() {
    echo "usage: bash scripts/taskres/enhance_base.sh DATASET SHOTS [DATA]" >&2
}

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    usage
    exit 2
fi

DATASET=$1
SHOTS=$2
DATA=${3:-${DATA:-}}
OUTPUT=$(grid_from_caller "${OUTPUT:-output}")
STRONG_BASE=$(grid_from_caller "${STRONG_BASE:-strong_base}")
BACKBONE=${BACKBONE:-RN50}
ENHANCE_CFG=${ENHANCE_CFG:-adam_lr1e-4_B256_ep50}
SEED=${SEED:-1}
read -r -a PY <<< "${PYTHON:-python}"
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"

if [[ ! $SHOTS =~ ^[1-9][0-9]*$ ]]; then
    echo "error: SHOTS must be a positive integer, got '$SHOTS'" >&2
    exit 2
fi
CLASS=$(grid_class_name "$DATASET")
TAG=$(grid_backbone_tag "$BACKBONE")
DIR=$OUTPUT/enhanced_base/$DATASET/${TAG}_${SHOTS}shots
PRODUCED=$DIR/strong_base.pth.tar
TARGET=$STRONG_BASE/$CLASS/${TAG}_${SHOTS}shots/model.pth.tar

if [ -f "$TARGET" ]; then
    echo "Skip: enhanced base exists at $TARGET"
    exit 0
fi

if [ ! -f "$PRODUCED" ]; then
    if [ -z "$DATA" ]; then
        echo "error: no dataset root given: set DATA=/path/to/datasets or pass it as the 3rd argument" >&2
        usage
        exit 2
    fi
    DATA=$(grid_from_caller "$DATA")
    if [ ! -d "$DATA" ]; then
        echo "error: dataset root $DATA is not a folder" >&2
        exit 2
    fi
    case $ENHANCE_CFG in
        *.yaml) CFG_FILE=$(grid_from_caller "$ENHANCE_CFG"); CFG_PATH=$CFG_FILE ;;
        *) CFG_FILE=configs/trainers/TaskResEnhancedBase/${ENHANCE_CFG}.yaml; CFG_PATH=$GRID_REPO/$CFG_FILE ;;
    esac
    if [ ! -f "$CFG_PATH" ]; then
        echo "error: enhanced-base config $CFG_PATH not found (set ENHANCE_CFG to a name in" \
             "configs/trainers/TaskResEnhancedBase/ or to a .yaml path)" >&2
        exit 2
    fi
    OPTS=(DATASET.NUM_SHOTS "$SHOTS")
    if [ "$BACKBONE" != RN50 ]; then OPTS+=(MODEL.BACKBONE.NAME "$BACKBONE"); fi
    if [ -d "$DIR" ]; then
        echo "Resume: enhanced base of $DATASET ${SHOTS}-shot at $DIR"
    else
        echo "Run: enhanced base of $DATASET ${SHOTS}-shot into $DIR"
    fi
    cd "$GRID_REPO"
    "${PY[@]}" train.py \
        --root "$DATA" \
        --seed "$SEED" \
        --trainer TaskResEnhancedBase \
        --dataset-config-file "configs/datasets/${DATASET}.yaml" \
        --config-file "$CFG_FILE" \
        --output-dir "$DIR" \
        "${OPTS[@]}" \
        ${EXTRA[@]+"${EXTRA[@]}"}
    if [ ! -f "$PRODUCED" ]; then
        echo "error: train.py finished but wrote no $PRODUCED" >&2
        exit 1
    fi
fi

# Copy next to the target, then rename: the target is either absent or complete.
mkdir -p "$(dirname "$TARGET")"
TMP=$(mktemp "$(dirname "$TARGET")/.model.pth.tar.XXXXXX")
trap 'rm -f "$TMP"' EXIT
cp "$PRODUCED" "$TMP"
mv -f "$TMP" "$TARGET"
trap - EXIT
echo "Installed: $TARGET (from $PRODUCED)"
