#!/usr/bin/env bash
# Domain generalization: evaluate the ImageNet 16-shot TaskRes model (seeds 1-3) on ImageNet-V2,
# ImageNet-Sketch, ImageNet-A and ImageNet-R, then average the seeds of each target.
#
#   DATA=/path/to/datasets bash test_dg.sh
#   DATA=/path/to/datasets BASE=enhanced bash test_dg.sh
#
# Environment (defaults in brackets):
#   DATA       dataset root (required)
#   OUTPUT     [output] output root of the training runs
#   BASE       [regular] regular|enhanced: which default MODELDIR to evaluate
#   MODELDIR   [$OUTPUT/imagenet/TaskRes/adam_lr2e-4_B256_ep200_16shots/base_${BASE}_alpha0.5]
#              the folder that holds seed1, seed2, seed3 (what train_regular.sh/train_enhance.sh write)
#   CFG        [generalization_rn50] a configs/trainers/TaskRes/ file
#   DG_OUTPUT  [$OUTPUT] results go to $DG_OUTPUT/<target>/TaskRes/$CFG/<basename of MODELDIR>/seed<S>
#   TARGETS    [imagenetv2 imagenet_sketch imagenet_a imagenet_r]
#   SEEDS, LOAD_EPOCH, SCALE, PYTHON, EXTRA_OPTS: passed to scripts/taskres/eval.sh
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/scripts/taskres/grid.sh"

DATA=${DATA:-}
OUTPUT=$(grid_from_caller "${OUTPUT:-output}")
BASE=${BASE:-regular}
CFG=${CFG:-generalization_rn50}
DG_OUTPUT=$(grid_from_caller "${DG_OUTPUT:-$OUTPUT}")
TARGETS=$(grid_select target "${TARGETS:-$DG_TARGETS}" "$DG_TARGETS")
read -r -a PY <<< "${PYTHON:-python}"

case $BASE in
    regular|enhanced) ;;
    *) echo "error: BASE must be regular or enhanced, got '$BASE'" >&2; exit 2 ;;
esac
MODELDIR=$(grid_from_caller "${MODELDIR:-$OUTPUT/imagenet/TaskRes/adam_lr2e-4_B256_ep200_16shots/base_${BASE}_alpha0.5}")
if [ -z "$DATA" ]; then
    echo "error: set DATA=/path/to/datasets (the dataset root)" >&2
    exit 2
fi

read -r -a TARGET_LIST <<< "$TARGETS"
EXP=$(basename "$MODELDIR")
N=0
for TARGET in "${TARGET_LIST[@]}"; do
    N=$((N + 1))
    echo "[$N/${#TARGET_LIST[@]}] $TARGET: $CFG, model $MODELDIR"
    bash "$GRID_REPO/scripts/taskres/eval.sh" "$TARGET" "$CFG" "$DG_OUTPUT/$TARGET/TaskRes/$CFG/$EXP" \
        "$MODELDIR" "$DATA"
done

STATUS=0
for TARGET in "${TARGET_LIST[@]}"; do
    if ! "${PY[@]}" "$GRID_REPO/parse_test_res.py" "$DG_OUTPUT/$TARGET/TaskRes/$CFG/$EXP" --test-log; then
        STATUS=1
    fi
done
exit $STATUS
