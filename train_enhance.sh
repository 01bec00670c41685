#!/usr/bin/env bash
# TaskRes with the enhanced base on the paper's few-shot grid:
# 11 datasets x 1/2/4/8/16 shots x seeds 1-3, one scripts/taskres/main.sh call per (dataset, shots),
# each on $STRONG_BASE/<DATASET.NAME>/<tag>_<K>shots/model.pth.tar.
#
#   DATA=/path/to/datasets bash train_enhance.sh
#
# A missing enhanced base is produced first with scripts/taskres/enhance_base.sh (the
# TaskResEnhancedBase trainer, seed 1) and installed at that path. Put downloaded strong_base
# files there (or point STRONG_BASE at them) to use those instead.
#
# Environment (defaults in brackets):
#   DATA         dataset root (required)
#   STRONG_BASE  [strong_base] root of the enhanced bases
#   BACKBONE     [RN50] CLIP backbone; the base folder tag is its lowercase without '/' and '-'
#                (rn50, vitb16); anything but RN50 is passed on as MODEL.BACKBONE.NAME
#   OUTPUT       [output] output root; runs go to
#                $OUTPUT/<dataset>/TaskRes/<cfg>_<K>shots/base_enhanced_alpha<alpha>/seed<S>,
#                produced bases to $OUTPUT/enhanced_base/<dataset>/<tag>_<K>shots
#   DATASETS, SHOTS, SEEDS, SHARD, KEEP_GOING, DRY_RUN, PYTHON, EXTRA_OPTS: as in train_regular.sh
#   ENHANCE_CFG  passed to enhance_base.sh
# See scripts/taskres/README.md.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/scripts/taskres/grid.sh"

DATA=${DATA:-}
BACKBONE=${BACKBONE:-RN50}
OUTPUT=$(grid_from_caller "${OUTPUT:-output}")
STRONG_BASE=$(grid_from_caller "${STRONG_BASE:-strong_base}")
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
TAG=$(grid_backbone_tag "$BACKBONE")
MAIN_BACKBONE=$BACKBONE
if [ "$BACKBONE" = RN50 ]; then MAIN_BACKBONE=; fi

read -r -a DS_LIST <<< "$DATASETS"
read -r -a K_LIST <<< "$SHOTS"
TOTAL=$(( ${#DS_LIST[@]} * ${#K_LIST[@]} ))
JOB=0
FAILED=()
for DATASET in "${DS_LIST[@]}"; do
    CLASS=$(grid_class_name "$DATASET")
    for K in "${K_LIST[@]}"; do
        JOB=$((JOB + 1))
        if [ $(( (JOB - 1) % SHARD_COUNT )) -ne "$SHARD_INDEX" ]; then continue; fi
        CFG=$(grid_cfg "$DATASET" "$K")
        ALPHA=$(grid_alpha "$DATASET")
        BASE=$STRONG_BASE/$CLASS/${TAG}_${K}shots/model.pth.tar
        echo "[$JOB/$TOTAL] $DATASET ${K}-shot: cfg=$CFG alpha=$ALPHA base=enhanced backbone=$BACKBONE"
        MAKE=(bash "$GRID_REPO/scripts/taskres/enhance_base.sh" "$DATASET" "$K" "$DATA")
        CMD=(bash "$GRID_REPO/scripts/taskres/main.sh" "$DATASET" "$CFG" "$BASE" "$K" "$ALPHA" "$DATA")
        if [ "$DRY_RUN" = 1 ]; then
            if [ ! -f "$BASE" ]; then echo "  ${MAKE[*]}"; fi
            echo "  ${CMD[*]}"
            continue
        fi
        if [ ! -f "$BASE" ]; then
            echo "  no enhanced base at $BASE: producing it"
            if ! BACKBONE=$BACKBONE OUTPUT=$OUTPUT STRONG_BASE=$STRONG_BASE "${MAKE[@]}"; then
                fail "$DATASET ${K}-shot" "enhanced base of $DATASET ${K}-shot failed"
                continue
            fi
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
echo "Done: train_enhance.sh (output under $OUTPUT)"
