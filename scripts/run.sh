#!/usr/bin/env bash
# Run any registered method on one dataset for several seeds: the seed loop that every
# scripts/<method>/main.sh wraps (each keeps its own arguments and checks, then runs this).
#
#   bash scripts/run.sh METHOD DATASET CFG SHOTS [DATA] [--variant NAME] [-- ARG...]
#
#   METHOD   a registered method (python -m engine.describe --list)
#   DATASET  name of a file in configs/datasets/ without .yaml (caltech101, imagenet, ...)
#   CFG      name of a file in configs/trainers/METHOD/ without .yaml, or "recipe": the method's
#            recipe for DATASET and SHOTS (its config and overrides; python -m engine.describe
#            METHOD DATASET SHOTS)
#   SHOTS    shots per class (1, 2, 4, 8, 16)
#   DATA     dataset root; the 5th argument wins over the DATA environment variable
#   --variant NAME  a folder between CFG_SHOTSshots and seedS (e.g. ratio0.2)
#   -- ARG...       the train.py arguments after --output-dir, given in full by the caller (a
#                   per-method main.sh); an ARG that is exactly {seed} becomes the seed. Without
#                   them: DATASET.NUM_SHOTS SHOTS, the recipe's overrides with CFG "recipe", and
#                   --eval-only for an evaluation-only method (python -m engine.describe METHOD)
#
# Output: $OUTPUT/DATASET/METHOD/CFG_SHOTSshots[/NAME]/seedS.
# Environment: SEEDS ("1 2 3"), OUTPUT (output), BACKBONE (MODEL.BACKBONE.NAME override; folder
# CFG-<tag>), EXTRA_OPTS (more KEY VALUE config overrides), PYTHON (python), DATA.
# Each seed: skipped when finished, else (re)run; train.py resumes from its checkpoint.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    echo "usage: bash scripts/run.sh METHOD DATASET CFG SHOTS [DATA] [--variant NAME] [-- ARG...]" >&2
    echo "       (CFG: a config name or 'recipe'; DATA may also come from \$DATA)" >&2
}

POSITIONAL=()
VARIANT=
TAIL=()
TAIL_GIVEN=0
while [ $# -gt 0 ]; do
    case $1 in
        --variant)
            [ $# -ge 2 ] || { usage; exit 2; }
            VARIANT=$2/
            shift 2 ;;
        --) shift; TAIL=("$@"); TAIL_GIVEN=1; break ;;
        *) POSITIONAL+=("$1"); shift ;;
    esac
done
check_nargs 4 5 ${#POSITIONAL[@]} || exit 2

METHOD=${POSITIONAL[0]}
DATASET=${POSITIONAL[1]}
CFG=${POSITIONAL[2]}
SHOTS=${POSITIONAL[3]}
DATA=${POSITIONAL[4]:-${DATA:-}}
SEEDS=${SEEDS:-1 2 3}
OUTPUT=${OUTPUT:-output}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"

check_data 5th || exit 2
OUTPUT=$(from_caller "$OUTPUT")

# Only what the caller left out is looked up (each look-up imports every trainer, and the
# per-method wrappers, run once per job of a grid, give their arguments in full).
DATASET_CFG=configs/datasets/${DATASET}.yaml
TRAINER_CFG=configs/trainers/${METHOD}/${CFG}.yaml
if [ "$CFG" = recipe ]; then
    describe_method "$METHOD" "$DATASET" "$SHOTS" || exit 2
    TRAINER_CFG=${FACTS[config]}
    CFG=${FACTS[cfg]}
elif [ $TAIL_GIVEN = 0 ]; then
    describe_method "$METHOD" || exit 2
fi
require_config "$DATASET_CFG" "$TRAINER_CFG" || exit 2

if [ $TAIL_GIVEN = 0 ]; then
    TAIL=(DATASET.NUM_SHOTS "$SHOTS" ${RECIPE_OPTS[@]+"${RECIPE_OPTS[@]}"})
    if [ "${FACTS[evaluation_only]}" = true ]; then TAIL=(--eval-only "${TAIL[@]}"); fi
fi
OPTS=()
backbone_override "$CFG"  # $BACKBONE: folder CFG-<tag>, MODEL.BACKBONE.NAME in OPTS

run_seeds "${OUTPUT}/${DATASET}/${METHOD}/${CFG_TAG}_${SHOTS}shots/${VARIANT}seed{seed}" \
    --root "$DATA" \
    --seed {seed} \
    --trainer "$METHOD" \
    --dataset-config-file "$DATASET_CFG" \
    --config-file "$TRAINER_CFG" \
    --output-dir {dir} \
    ${TAIL[@]+"${TAIL[@]}"} \
    ${OPTS[@]+"${OPTS[@]}"} \
    ${EXTRA[@]+"${EXTRA[@]}"}
