#!/usr/bin/env bash
# The whole method comparison on a set of datasets: the methods of scripts/all_methods.list
# (zero-shot CLIP, the linear probe, prompt learners, adapters and task residuals, on the regular
# and on the enhanced base), each with its paper's recipe (its configs/trainers/ folder) for every
# shot count and seed, then the comparison table and the few-shot figure.
#
#   DATA=/path/to/datasets bash scripts/all_methods.sh
#   DATA=$DATA DATASETS="eurosat dtd" SHOTS="1 16" SEEDS="1" bash scripts/all_methods.sh
#
# Environment (defaults in brackets):
#   DATA           dataset root (required)
#   DATASETS       [the 11 few-shot datasets] configs/datasets names, space or comma separated
#   SHOTS          [1 2 4 8 16]
#   SEEDS          [1 2 3]
#   METHODS        [every name of scripts/all_methods.list] a subset to run
#   OUTPUT         [output/comparison] runs go to $OUTPUT/<dataset>/<method>/..., the table to
#                  $OUTPUT/comparison.md (+ .csv) and the figure to $OUTPUT/curves.png
#   FEATURES_MODE  [cached] image features from the feature store, shared by every method, shot
#                  count and seed (online: augment and encode every batch, as the references)
#   BACKBONE       [each recipe's own] MODEL.BACKBONE.NAME for every method
#   EXTRA_OPTS     more KEY VALUE overrides for every run (e.g. OPTIM.MAX_EPOCH 5 for a quick look)
#   PYTHON         [python]
# Each (dataset, method) runs as one sweep.py process (one CLIP load, shared features); finished
# runs are skipped and interrupted ones resume, so rerunning the script continues the comparison.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
. "$(dirname "${BASH_SOURCE[0]}")/taskres/grid.sh"

# NAME -> its line of all_methods.list (the comparison's methods are data, not script code).
declare -A ENTRY=()
ALL_METHODS=
while read -r NAME REST; do
    case $NAME in ''|'#'*) continue ;; esac
    ENTRY[$NAME]=$REST
    ALL_METHODS+="$NAME "
done < "$(dirname "${BASH_SOURCE[0]}")/all_methods.list"
ALL_METHODS=${ALL_METHODS% }
DATA=$(require_data "${DATA:-}") || exit 2
DATASETS=$(grid_select dataset "${DATASETS:-$GRID_DATASETS}" "$GRID_DATASETS ${DG_TARGETS}")
METHODS=$(grid_select method "${METHODS:-$ALL_METHODS}" "$ALL_METHODS")
SHOTS=${SHOTS:-1 2 4 8 16}
SEEDS=${SEEDS:-1 2 3}
OUTPUT=$(from_caller "${OUTPUT:-output/comparison}")
FEATURES_MODE=${FEATURES_MODE:-cached}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"
read -r -a SHOT_LIST <<< "${SHOTS//,/ }"
read -r -a SEED_LIST <<< "${SEEDS//,/ }"

COMMON=(FEATURES.MODE "$FEATURES_MODE")
if [ -n "${BACKBONE:-}" ]; then COMMON+=(MODEL.BACKBONE.NAME "$BACKBONE"); fi
COMMON+=(${EXTRA[@]+"${EXTRA[@]}"})
FAILED=()
STOPPED=  # set when a sweep stopped on weights that cannot be loaded: every later part would too

sweep() {  # DATASET TRAINER OUTPUT-DIR [more sweep/train.py args]
    local dataset=$1 trainer=$2 out=$3 rc=0
    shift 3
    (cd "$REPO" && "${PY[@]}" sweep.py --shots "${SHOT_LIST[@]}" --seeds "${SEED_LIST[@]}" --recipe \
        --root "$DATA" --trainer "$trainer" --dataset-config-file "configs/datasets/$dataset.yaml" \
        --output-dir "$out" "$@" "${COMMON[@]}") || rc=$?
    if [ "$rc" -ne 0 ]; then FAILED+=("$dataset/$trainer"); fi
    if [ "$rc" -eq 3 ]; then STOPPED="$dataset/$trainer"; fi  # sweep.py: weights that cannot be loaded
}

for DATASET in $DATASETS; do
    [ -z "$STOPPED" ] || break
    for METHOD in $METHODS; do
        [ -z "$STOPPED" ] || break
        echo "=== $DATASET: $METHOD"
        read -r TRAINER NEED <<< "${ENTRY[$METHOD]}"
        TRAINER=${TRAINER:-$METHOD}
        describe_method "$TRAINER" "$DATASET" "${SHOT_LIST[0]}" || { FAILED+=("$DATASET/$METHOD"); continue; }
        if [ "${FACTS[evaluation_only]}" = true ]; then
            # Nothing trained: one evaluation for every shot count and seed.
            run_train "$OUTPUT/$DATASET/$METHOD" --root "$DATA" --trainer "$TRAINER" \
                --dataset-config-file "configs/datasets/$DATASET.yaml" \
                --config-file "${FACTS[config]}" --output-dir "$OUTPUT/$DATASET/$METHOD" \
                --eval-only ${RECIPE_OPTS[@]+"${RECIPE_OPTS[@]}"} "${COMMON[@]}" || FAILED+=("$DATASET/$METHOD")
        elif [ -n "$NEED" ]; then
            # NEED=PRODUCER:FILE; the flag that takes the product is the method's own (its needs).
            PRODUCT=${NEED%%=*} PRODUCER=${NEED#*=}
            PRODUCT_FILE=${PRODUCER#*:} PRODUCER=${PRODUCER%%:*}
            FLAG=$(tr ' ' '\n' <<< "${FACTS[needs]}" | sed -n "s/^$PRODUCT=//p")
            [ -n "$FLAG" ] || { echo "error: $TRAINER needs no $PRODUCT (all_methods.list)" >&2; exit 2; }
            describe_method "$PRODUCER" "$DATASET" "${SHOT_LIST[0]}" || { FAILED+=("$DATASET/$PRODUCER"); continue; }
            PRODUCER_CONFIG=${FACTS[config]}
            # The product is made per shot count (seed 1, as the published files).
            for K in "${SHOT_LIST[@]}"; do
                BASE_DIR=$OUTPUT/$DATASET/$PRODUCER/${K}shots
                run_train "$BASE_DIR" --root "$DATA" --seed 1 --trainer "$PRODUCER" \
                    --dataset-config-file "configs/datasets/$DATASET.yaml" \
                    --config-file "$PRODUCER_CONFIG" \
                    --output-dir "$BASE_DIR" DATASET.NUM_SHOTS "$K" "${COMMON[@]}" \
                    || { FAILED+=("$DATASET/$PRODUCER/$K"); continue; }
                SHOT_LIST_SAVED=("${SHOT_LIST[@]}")
                SHOT_LIST=("$K")
                sweep "$DATASET" "$TRAINER" "$OUTPUT/$DATASET/$TRAINER" "$FLAG" "$BASE_DIR/$PRODUCT_FILE"
                SHOT_LIST=("${SHOT_LIST_SAVED[@]}")
                [ -z "$STOPPED" ] || break
            done
        else
            sweep "$DATASET" "$TRAINER" "$OUTPUT/$DATASET/$METHOD"
        fi
    done
done

# The table of what finished; a failure here must not hide the summary below.
TABLE=0
(cd "$REPO" && "${PY[@]}" -m analysis.compare "$OUTPUT" --out "$OUTPUT/comparison.md" --csv "$OUTPUT/comparison.csv" \
    --figure "$OUTPUT/curves.png") || TABLE=$?
if [ -n "$STOPPED" ]; then
    echo "error: stopped at $STOPPED: its weights cannot be loaded (the error above) and every later part would" \
         "try again; make them available (or set BACKBONE) and rerun to resume" >&2
fi
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "error: ${#FAILED[@]} part(s) failed: ${FAILED[*]} (rerun to resume)" >&2
    exit 1
fi
[ "$TABLE" -eq 0 ] || exit "$TABLE"
echo "Done: $OUTPUT/comparison.md, $OUTPUT/curves.png"
