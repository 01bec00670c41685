#!/usr/bin/env bash
# Evaluate CoOp contexts trained on ImageNet on another dataset without training (CoOp's
# scripts/coop/eval.sh: domain generalization to imagenetv2, imagenet_sketch, imagenet_a,
# imagenet_r, or cross-dataset transfer).
#
#   bash scripts/coop/eval.sh DATASET CFG [DATA]
#
#   DATASET  target: a file in configs/datasets/ without .yaml (imagenetv2, imagenet_sketch, ...)
#   CFG      the config the ImageNet model was trained with (configs/trainers/CoOp/CFG.yaml)
#   DATA     dataset root; the 3rd argument wins over the DATA environment variable
#
# For each seed S, loads
#   $OUTPUT/imagenet/CoOp/CFG_SHOTSshots/nctxNCTX_cscCSC_ctpCTP/seedS/prompt_learner/model.pth.tar-LOAD_EPOCH
# and writes
#   $OUTPUT/evaluation/CoOp/CFG_SHOTSshots/nctxNCTX_cscCSC_ctpCTP/DATASET/seedS
# Only the context is transferred: the class-token embeddings are rebuilt from the target's class
# names. ImageNet-A/-R have 200 of the 1000 classes: a generic context transfers as is, and a
# class-specific one keeps the rows of those 200 classes.
#
# Environment: SHOTS (16), NCTX (16), CSC (False), CTP (end), LOAD_EPOCH (50), SEEDS ("1 2 3"),
# OUTPUT (output), MODEL_ROOT (the ImageNet runs' top folder: $OUTPUT/imagenet/CoOp),
# EXTRA_OPTS, PYTHON (python), DATA. A seed whose folder holds results.json is skipped.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

usage() {
    echo "usage: bash scripts/coop/eval.sh DATASET CFG [DATA]" >&2
}
check_nargs 2 3 $# || exit 2

DATASET=$1
CFG=$2
DATA=${3:-${DATA:-}}
SHOTS=${SHOTS:-16}
NCTX=${NCTX:-16}
CSC=${CSC:-False}
CTP=${CTP:-end}
LOAD_EPOCH=${LOAD_EPOCH:-50}
SEEDS=${SEEDS:-1 2 3}
OUTPUT=${OUTPUT:-output}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"

check_data 3rd || exit 2
OUTPUT=$(from_caller "$OUTPUT")
MODEL_ROOT=$(from_caller "${MODEL_ROOT:-$OUTPUT/imagenet/CoOp}")

DATASET_CFG=configs/datasets/${DATASET}.yaml
TRAINER_CFG=configs/trainers/CoOp/${CFG}.yaml
require_config "$DATASET_CFG" "$TRAINER_CFG" || exit 2

RUN=${CFG}_${SHOTS}shots/nctx${NCTX}_csc${CSC}_ctp${CTP}
# Check every checkpoint that is needed before running anything.
MISSING=()
for SEED in $SEEDS; do
    CKPT=$MODEL_ROOT/$RUN/seed$SEED/prompt_learner/model.pth.tar-$LOAD_EPOCH
    [ -f "$CKPT" ] || MISSING+=("$CKPT")
done
if [ ${#MISSING[@]} -gt 0 ]; then
    {
        for CKPT in "${MISSING[@]}"; do echo "error: checkpoint not found: $CKPT"; done
        echo "Train on ImageNet first, e.g."
        echo "  bash scripts/coop/main.sh imagenet $CFG $CTP $NCTX $SHOTS $CSC $DATA"
        echo "or set LOAD_EPOCH / MODEL_ROOT to the checkpoints you have."
    } >&2
    exit 2
fi

for SEED in $SEEDS; do
    DIR=$OUTPUT/evaluation/CoOp/$RUN/$DATASET/seed$SEED
    if [ -f "$DIR/results.json" ]; then
        echo "Skip: finished evaluation at $DIR"
        continue
    fi
    echo "Run: $DATASET seed $SEED from $MODEL_ROOT/$RUN/seed$SEED (epoch $LOAD_EPOCH) into $DIR"
    (cd "$REPO" && "${PY[@]}" train.py \
        --root "$DATA" \
        --seed "$SEED" \
        --trainer CoOp \
        --dataset-config-file "$DATASET_CFG" \
        --config-file "$TRAINER_CFG" \
        --output-dir "$DIR" \
        --model-dir "$MODEL_ROOT/$RUN/seed$SEED" \
        --load-epoch "$LOAD_EPOCH" \
        --eval-only \
        TRAINER.COOP.N_CTX "$NCTX" \
        TRAINER.COOP.CSC "$CSC" \
        TRAINER.COOP.CLASS_TOKEN_POSITION "$CTP" \
        ${EXTRA[@]+"${EXTRA[@]}"})
done
