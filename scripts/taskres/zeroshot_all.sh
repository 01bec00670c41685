#!/usr/bin/env bash
# Zero-shot CLIP on the 11 few-shot datasets and the 4 domain-generalization targets: one
# scripts/taskres/zeroshot.sh call per dataset, into $OUTPUT/$TRAINER/$CFG/<dataset>.
#
#   bash scripts/taskres/zeroshot_all.sh [CFG] [DATA]
#
#   CFG   a file of configs/trainers/ZeroshotCLIP/ without .yaml [rn50]
#   DATA  dataset root; the 2nd argument wins over the DATA environment variable
#
# Environment: DATASETS (the 15 datasets), TRAINER (ZeroshotCLIP2), OUTPUT (output),
# FORCE (0; 1 evaluates datasets that already have results.json again), KEEP_GOING (0),
# PYTHON, EXTRA_OPTS, DATA.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/grid.sh"

if [ $# -gt 2 ]; then
    echo "usage: bash scripts/taskres/zeroshot_all.sh [CFG] [DATA]" >&2
    exit 2
fi
CFG=${1:-rn50}
DATA=${2:-${DATA:-}}
TRAINER=${TRAINER:-ZeroshotCLIP2}
OUTPUT=$(grid_from_caller "${OUTPUT:-output}")
ALL="$GRID_DATASETS $DG_TARGETS"
DATASETS=$(grid_select dataset "${DATASETS:-$ALL}" "$ALL")
FORCE=${FORCE:-0}
KEEP_GOING=${KEEP_GOING:-0}

if [ -z "$DATA" ]; then
    echo "error: no dataset root given: set DATA=/path/to/datasets or pass it as the 2nd argument" >&2
    exit 2
fi
DATA=$(grid_from_caller "$DATA")

read -r -a DS_LIST <<< "$DATASETS"
N=0
FAILED=()
for DATASET in "${DS_LIST[@]}"; do
    N=$((N + 1))
    DIR=$OUTPUT/$TRAINER/$CFG/$DATASET
    if [ "$FORCE" != 1 ] && [ -f "$DIR/results.json" ]; then
        echo "[$N/${#DS_LIST[@]}] $DATASET: skip, finished at $DIR"
        continue
    fi
    echo "[$N/${#DS_LIST[@]}] $DATASET: $TRAINER $CFG"
    if ! TRAINER=$TRAINER OUTPUT=$OUTPUT bash "$GRID_REPO/scripts/taskres/zeroshot.sh" "$DATASET" "$CFG" "$DATA"; then
        if [ "$KEEP_GOING" = 1 ]; then
            FAILED+=("$DATASET")
        else
            echo "error: zero-shot $DATASET failed (set KEEP_GOING=1 to go on)" >&2
            exit 1
        fi
    fi
done
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "error: ${#FAILED[@]} dataset(s) failed: ${FAILED[*]}" >&2
    exit 1
fi
echo "Done. Per-dataset results: python parse_test_res.py $OUTPUT/$TRAINER/$CFG --test-log"
