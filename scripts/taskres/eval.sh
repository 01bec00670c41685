#!/usr/bin/env bash
# Evaluate trained TaskRes checkpoints on another dataset without training (domain
# generalization: ImageNet -> ImageNet-V2/-Sketch/-A/-R).
#
#   bash scripts/taskres/eval.sh TARGET CFG OUTDIR MODELDIR [DATA]
#
#   TARGET    name of a file in configs/datasets/ without .yaml (imagenetv2, imagenet_sketch, ...)
#   CFG       name of a file in configs/trainers/TaskRes/ without .yaml (generalization_rn50, ...)
#   OUTDIR    results go to OUTDIR/seed<S>
#   MODELDIR  folder of the trained seeds: MODELDIR/seed<S>/prompt_learner/model.pth.tar-<E>
#   DATA      dataset root; the 5th argument wins over the DATA environment variable
#
# For each seed:
#   python train.py --root DATA --seed S --trainer TaskRes
#       --dataset-config-file configs/datasets/TARGET.yaml --config-file configs/trainers/TaskRes/CFG.yaml
#       --output-dir OUTDIR/seedS --model-dir MODELDIR/seedS --load-epoch E --eval-only
#       TRAINER.TaskRes.RESIDUAL_SCALE ALPHA [$EXTRA_OPTS]
# The base stored in the checkpoint (regular or enhanced) is the one evaluated; the trainer keeps
# the 200 ImageNet rows of ImageNet-A/-R itself.
#
# Environment: SEEDS (1 2 3), LOAD_EPOCH (200), SCALE (alpha: the number in a MODELDIR name
# ending in _alpha<X>, else 0.5; it must be the alpha the model was trained with), PYTHON (python),
# EXTRA_OPTS, DATA. A seed whose OUTDIR/seed<S> has results.json is skipped.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/grid.sh"

usage() {
    echo "usage: bash scripts/taskres/eval.sh TARGET CFG OUTDIR MODELDIR [DATA]" >&2
}

if [ $# -lt 4 ] || [ $# -gt 5 ]; then
    usage
    exit 2
fi

TARGET=$1
CFG=$2
OUTDIR=$(grid_from_caller "$3")
MODELDIR=$(grid_from_caller "$4")
DATA=${5:-${DATA:-}}
SEEDS=${SEEDS:-1 2 3}
LOAD_EPOCH=${LOAD_EPOCH:-200}
read -r -a PY <<< "${PYTHON:-python}"
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"

if [ -z "${SCALE:-}" ]; then
    SCALE=0.5
    if [[ $(basename "$MODELDIR") =~ _alpha([0-9]+(\.[0-9]+)?)$ ]]; then SCALE=${BASH_REMATCH[1]}; fi
fi

if [ -z "$DATA" ]; then
    echo "error: no dataset root given: set DATA=/path/to/datasets or pass it as the 5th argument" >&2
    usage
    exit 2
fi
DATA=$(grid_from_caller "$DATA")
if [ ! -d "$DATA" ]; then
    echo "error: dataset root $DATA is not a folder" >&2
    exit 2
fi

cd "$GRID_REPO"
DATASET_CFG=configs/datasets/${TARGET}.yaml
TRAINER_CFG=configs/trainers/TaskRes/${CFG}.yaml
for f in "$DATASET_CFG" "$TRAINER_CFG"; do
    if [ ! -f "$f" ]; then
        echo "error: $f not found; available: $(cd "$(dirname "$f")" && ls -- *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
        exit 2
    fi
done

# Check every checkpoint that is needed before running anything.
TODO=()
MISSING=()
for SEED in $SEEDS; do
    if [ -f "$OUTDIR/seed$SEED/results.json" ]; then
        echo "Skip: finished evaluation at $OUTDIR/seed$SEED"
        continue
    fi
    CKPT=$MODELDIR/seed$SEED/prompt_learner/model.pth.tar-$LOAD_EPOCH
    if [ -f "$CKPT" ]; then
        TODO+=("$SEED")
    else
        MISSING+=("$CKPT")
    fi
done
if [ ${#MISSING[@]} -gt 0 ]; then
    {
        for CKPT in "${MISSING[@]}"; do
            echo "error: checkpoint not found: $CKPT"
            OTHERS=$(cd "$(dirname "$CKPT")" 2>/dev/null && ls -- model.pth.tar-* 2>/dev/null | tr '\n' ' ' || true)
            if [ -n "$OTHERS" ]; then echo "       that folder has: $OTHERS(set LOAD_EPOCH to use one)"; fi
        done
        echo "Train the ImageNet model first (16 shots, seeds $SEEDS), e.g."
        if [[ $(basename "$MODELDIR") == base_enhanced_* ]]; then
            echo "  DATA=$DATA DATASETS=imagenet SHOTS=16 bash train_enhance.sh"
        else
            echo "  DATA=$DATA DATASETS=imagenet SHOTS=16 bash train_regular.sh"
            echo "or"
            echo "  bash scripts/taskres/main.sh imagenet adam_lr2e-4_B256_ep200 none 16 0.5 $DATA"
        fi
        echo "and pass its folder (the one holding seed1, seed2, ...) as MODELDIR."
    } >&2
    exit 2
fi

for SEED in ${TODO[@]+"${TODO[@]}"}; do
    DIR=$OUTDIR/seed$SEED
    echo "Run: $TARGET seed $SEED from $MODELDIR/seed$SEED (epoch $LOAD_EPOCH, alpha $SCALE) into $DIR"
    "${PY[@]}" train.py \
        --root "$DATA" \
        --seed "$SEED" \
        --trainer TaskRes \
        --dataset-config-file "$DATASET_CFG" \
        --config-file "$TRAINER_CFG" \
        --output-dir "$DIR" \
        --model-dir "$MODELDIR/seed$SEED" \
        --load-epoch "$LOAD_EPOCH" \
        --eval-only \
        TRAINER.TaskRes.RESIDUAL_SCALE "$SCALE" \
        ${EXTRA[@]+"${EXTRA[@]}"}
done
