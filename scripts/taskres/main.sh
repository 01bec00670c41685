#!/usr/bin/env bash
# Train TaskRes on one dataset for several seeds.
#
#   bash scripts/taskres/main.sh DATASET CFG ENHANCE SHOTS SCALE [DATA]
#
#   DATASET  name of a file in configs/datasets/ without .yaml (caltech101, imagenet, ...)
#   CFG      name of a file in configs/trainers/TaskRes/ without .yaml (adam_lr2e-3_B256_ep200, ...)
#   ENHANCE  "none" for the regular base, or the path of an enhanced-base checkpoint
#   SHOTS    shots per class (1, 2, 4, 8, 16)
#   SCALE    residual scale alpha (TRAINER.TaskRes.RESIDUAL_SCALE)
#   DATA     dataset root; the 6th argument wins over the DATA environment variable
#
# Environment: SEEDS ("1 2 3"), OUTPUT (output), BACKBONE (MODEL.BACKBONE.NAME override),
# EXTRA_OPTS (more KEY VALUE config overrides), PYTHON (python), DATA.
# See scripts/taskres/README.md.
set -euo pipefail

usage() {
    echo "usage: bash scripts/taskres/main.sh DATASET CFG ENHANCE SHOTS SCALE [DATA]" >&2
    echo "       (ENHANCE is 'none' or the path of an enhanced base; DATA may also come from \$DATA)" >&2
}

if [ $# -lt 5 ] || [ $# -gt 6 ]; then
    usage
    exit 2
fi

DATASET=$1
CFG=$2
ENHANCE=$3
SHOTS=$4
SCALE=$5
DATA=${6:-${DATA:-}}
SEEDS=${SEEDS:-1 2 3}
OUTPUT=${OUTPUT:-output}
BACKBONE=${BACKBONE:-}
read -r -a PY <<< "${PYTHON:-python}"
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
CALLER=$(pwd -P)

# Relative paths given by the caller are relative to where the script was started; the script
# itself runs train.py from the repository root.
from_caller() {
    case $1 in
        /*) printf '%s\n' "$1" ;;
        *) if [ "$CALLER" = "$REPO" ]; then printf '%s\n' "$1"; else printf '%s\n' "$CALLER/$1"; fi ;;
    esac
}

if [ -z "$DATA" ]; then
    echo "error: no dataset root given: set DATA=/path/to/datasets or pass it as the 6th argument" >&2
    usage
    exit 2
fi
DATA=$(from_caller "$DATA")
OUTPUT=$(from_caller "$OUTPUT")
if [ ! -d "$DATA" ]; then
    echo "error: dataset root $DATA is not a folder" >&2
    exit 2
fi
if [ "$ENHANCE" = "none" ]; then
    BASE=regular
else
    BASE=enhanced
    ENHANCE=$(from_caller "$ENHANCE")
    if [ ! -f "$ENHANCE" ]; then
        echo "error: enhanced base $ENHANCE not found (use 'none' for the regular base)" >&2
        exit 2
    fi
fi

cd "$REPO"
DATASET_CFG=configs/datasets/${DATASET}.yaml
TRAINER_CFG=configs/trainers/TaskRes/${CFG}.yaml
for f in "$DATASET_CFG" "$TRAINER_CFG"; do
    if [ ! -f "$f" ]; then
        echo "error: $f not found; available: $(cd "$(dirname "$f")" && ls -- *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
        exit 2
    fi
done

# A backbone override gets its own folder so that it never mixes with the config's backbone.
CFG_TAG=$CFG
OPTS=(DATASET.NUM_SHOTS "$SHOTS" TRAINER.TaskRes.RESIDUAL_SCALE "$SCALE")
if [ -n "$BACKBONE" ]; then
    BB_TAG=$(printf '%s' "$BACKBONE" | tr -c 'A-Za-z0-9._:+-' '-' | sed 's/^-*//')
    CFG_TAG=${CFG}-${BB_TAG}
    OPTS+=(MODEL.BACKBONE.NAME "$BACKBONE")
fi

# A run is finished when it wrote results.json, or when one of its logs has the "=> result"
# block after "Finish training". Anything else (no folder, a killed run) is (re)started;
# train.py resumes from the checkpoint in the folder.
finished() {
    local dir=$1 log
    [ -f "$dir/results.json" ] && return 0
    for log in "$dir"/log.txt "$dir"/log.txt-*; do
        [ -f "$log" ] || continue
        if awk '{ sub(/\r$/, ""); gsub(/^[ \t]+|[ \t]+$/, "") }
                $0 == "Finish training" { trained = 1 }
                trained && $0 == "=> result" { ok = 1 }
                END { exit ok ? 0 : 1 }' "$log"; then
            return 0
        fi
    done
    return 1
}

for SEED in $SEEDS; do
    DIR=${OUTPUT}/${DATASET}/TaskRes/${CFG_TAG}_${SHOTS}shots/base_${BASE}_alpha${SCALE}/seed${SEED}
    if finished "$DIR"; then
        echo "Skip: finished run at ${DIR}"
        continue
    fi
    if [ -d "$DIR" ]; then
        echo "Resume: ${DIR} has no final result, running it again"
    else
        echo "Run: ${DIR}"
    fi
    "${PY[@]}" train.py \
        --root "$DATA" \
        --seed "$SEED" \
        --trainer TaskRes \
        --dataset-config-file "$DATASET_CFG" \
        --config-file "$TRAINER_CFG" \
        --output-dir "$DIR" \
        --enhanced-base "$ENHANCE" \
        "${OPTS[@]}" \
        ${EXTRA[@]+"${EXTRA[@]}"}
done
