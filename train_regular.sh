#!/usr/bin/env bash
# TaskRes with the regular base on the paper's few-shot grid:
# 11 datasets x 1/2/4/8/16 shots x seeds 1-3, one scripts/taskres/main.sh call per (dataset, shots).
#
#   DATA=/path/to/datasets bash train_regular.sh
#   DATA=/path/to/datasets DATASETS="caltech101 dtd" SHOTS="1 16" bash train_regular.sh
#
# Environment (defaults in brackets):
#   DATA        dataset root (required)
#   BACKBONE    [RN50] CLIP backbone; anything but RN50 is passed to main.sh (MODEL.BACKBONE.NAME)
#               and gets a tag in the folder names
#   OUTPUT      [output] output root; runs go to
#               $OUTPUT/<dataset>/TaskRes/<cfg>_<K>shots/base_regular_alpha<alpha>/seed<S>
#   DATASETS    [all 11] datasets to run (names of configs/datasets/ files, space or comma separated)
#   SHOTS       [1 2 4 8 16] shot counts to run
#   SEEDS       [1 2 3] passed to main.sh
#   SHARD       [0/1] i/N: run only jobs i, i+N, i+2N, ... (split the grid over GPUs or array tasks)
#   KEEP_GOING  [0] 1: go on after a failed job and list the failures at the end (exit status 1)
#   DRY_RUN     [0] 1: print the main.sh commands without running them
#   PYTHON, EXTRA_OPTS: passed to main.sh
# Finished seeds are skipped and unfinished ones rerun by main.sh, so rerunning this script
# resumes the grid. See scripts/taskres/README.md.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/scripts/taskres/grid.sh"

DATA=${DATA:-}
BACKBONE=${BACKBONE:-RN50}
OUTPUT=$(grid_from_caller "${OUTPUT:-output}")
DATASETS=$(grid_select dataset "${DATASETS:-$GRID_DATASETS}" "$GRID_DATASETS")
SHOTS=$(grid_select shots "${SHOTS:-$GRID_SHOTS}" "$GRID_SHOTS")
KEEP_GOING=${KEEP_GOING:-0}
DRY_RUN=${DRY_RUN:-0}
grid_parse_shard

if [ -n "$DATA" ]; then
    DATA=$(grid_from_caller "$DATA")
elif [ "$DRY_RUN" = 1 ]; then
    DATA='<DATA>'
else
    echo "error: set DATA=/path/to/datasets (the dataset root)" >&2
    exit 2
fi
# RN50 is the backbone of every TaskRes recipe: leave it to the config so that the folders are
# the plain <cfg>_<K>shots ones.
MAIN_BACKBONE=$BACKBONE
if [ "$BACKBONE" = RN50 ]; then MAIN_BACKBONE=; fi

read -r -a DS_LIST <<< "$DATASETS"
read -r -a K_LIST <<< "$SHOTS"
TOTAL=$(( ${#DS_LIST[@]} * ${#K_LIST[@]} ))
JOB=0
FAILED=()
for DATASET in "${DS_LIST[@]}"; do
    for K in "${K_LIST[@]}"; do
        JOB=$((JOB + 1))
        if [ $(( (JOB - 1) % SHARD_COUNT )) -ne "$SHARD_INDEX" ]; then continue; fi
        CFG=$(grid_cfg "$DATASET" "$K")
        ALPHA=$(grid_alpha "$DATASET")
        echo "[$JOB/$TOTAL] $DATASET ${K}-shot: cfg=$CFG alpha=$ALPHA base=regular backbone=$BACKBONE"
        CMD=(bash "$GRID_REPO/scripts/taskres/main.sh" "$DATASET" "$CFG" none "$K" "$ALPHA" "$DATA")
        if [ "$DRY_RUN" = 1 ]; then
            echo "  ${CMD[*]}"
            continue
        fi
        if ! BACKBONE=$MAIN_BACKBONE OUTPUT=$OUTPUT "${CMD[@]}"; then
            fail "$DATASET ${K}-shot" "$DATASET ${K}-shot failed"
        fi
    done
done

if [ ${#FAILED[@]} -gt 0 ]; then
    echo "error: ${#FAILED[@]} job(s) failed: ${FAILED[*]}" >&2
    exit 1
fi
echo "Done: train_regular.sh (output under $OUTPUT)"
