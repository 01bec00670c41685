# Checks and helpers shared by every per-method driver (scripts/<method>/*.sh). Source it right
# after `set -euo pipefail`: `. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"`; it defines
# functions and REPO / CALLER / PY, and runs nothing.
#
#   from_caller PATH           a path given by the user, relative to where the script started
#   require_data DATA          checks the dataset root; prints it absolute
#   require_config FILE...     checks config files (relative to the repo); lists the choices
#   backbone_tag NAME          a short folder-safe tag for a backbone name or a weights file path
#   finished DIR               true when DIR holds a finished run (results.json, or a log with
#                              "Finish training" followed by "=> result")
#   run_train DIR ARGS...      skip a finished DIR, else (re)run `train.py ARGS` (which must
#                              include --output-dir DIR; a rerun resumes from its checkpoint)
#
# The skeleton of a driver (scripts/coop/main.sh is the model):
#   check_nargs MIN MAX COUNT  the script's usage() and status 2 unless MIN <= COUNT <= MAX
#   check_data NTH             DATA (the NTH argument, else $DATA) checked and made absolute; a
#                              missing one says "pass it as the NTH argument" and prints usage()
#   backbone_override CFG      sets CFG_TAG: CFG, or CFG-<tag> when $BACKBONE is set, which also
#                              appends MODEL.BACKBONE.NAME $BACKBONE to the OPTS array
#   run_seeds TEMPLATE ARGS... run_train for each seed of $SEEDS, into TEMPLATE with {seed}
#                              replaced; an ARG that is exactly {seed} or {dir} becomes the seed
#                              or that folder (so `--seed {seed} --output-dir {dir}`)
#   require_checkpoint FILE LINE...
#                              unless FILE exists, prints the LINEs (what is missing, how to make
#                              it) to stderr and fails with status 2
#   run_eval DIR ARGS...       an evaluation-only run: skipped once DIR has results.json, else
#                              `train.py ARGS` (with --output-dir DIR)
#   describe_method METHOD [DATASET SHOTS]
#                              what the method says of itself (python -m engine.describe): FACTS
#                              (evaluation_only, needs, produces, ...; with DATASET SHOTS also its
#                              recipe's config and cfg) and RECIPE_OPTS, the recipe's KEY VALUE pairs
# The generic seed loop of every method is scripts/run.sh; scripts/<method>/main.sh wrap it.
# Those that can fail return 2 (callers add `|| exit 2`) instead of exiting themselves.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
CALLER=$(pwd -P)
read -r -a PY <<< "${PYTHON:-python}"

from_caller() {
    case $1 in
        /*) printf '%s\n' "$1" ;;
        *) if [ "$CALLER" = "$REPO" ]; then printf '%s\n' "$1"; else printf '%s\n' "$CALLER/$1"; fi ;;
    esac
}

require_data() {
    if [ -z "$1" ]; then
        echo "error: no dataset root given: set DATA=/path/to/datasets or pass it as an argument" >&2
        return 2
    fi
    local data
    data=$(from_caller "$1")
    if [ ! -d "$data" ]; then
        echo "error: dataset root $data is not a folder" >&2
        return 2
    fi
    printf '%s\n' "$data"
}

require_config() {
    local f
    for f in "$@"; do
        if [ ! -f "$REPO/$f" ]; then
            echo "error: $f not found; available: $(cd "$REPO/$(dirname "$f")" 2>/dev/null && ls -- *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
            return 2
        fi
    done
}

backbone_tag() {
    local name=$1
    if [ -f "$name" ] || [[ $name == */* && $name == *.* ]]; then
        name=$(basename "$name")
        name=${name%.*}
    fi
    printf '%s' "$name" | tr -c 'A-Za-z0-9._:+-' '-' | sed 's/^-*//; s/-*$//'
}

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

run_train() {
    local dir=$1
    shift
    if finished "$dir"; then
        echo "Skip: finished run at ${dir}"
        return 0
    fi
    if [ -d "$dir" ]; then
        echo "Resume: ${dir} has no final result, running it again"
    else
        echo "Run: ${dir}"
    fi
    (cd "$REPO" && "${PY[@]}" train.py "$@")
}

check_nargs() {  # MIN MAX COUNT
    if [ "$3" -lt "$1" ] || [ "$3" -gt "$2" ]; then
        usage
        return 2
    fi
}

check_data() {  # NTH: sets DATA
    if [ -z "${DATA:-}" ]; then
        echo "error: no dataset root given: set DATA=/path/to/datasets or pass it as the $1 argument" >&2
        usage
        return 2
    fi
    DATA=$(require_data "$DATA") || return 2
}

# A backbone override gets its own folder so that it never mixes with the config's backbone.
backbone_override() {  # CFG: sets CFG_TAG, may append to OPTS
    CFG_TAG=$1
    if [ -n "${BACKBONE:-}" ]; then
        CFG_TAG=$1-$(backbone_tag "$BACKBONE")
        OPTS+=(MODEL.BACKBONE.NAME "$BACKBONE")
    fi
}

# One run_train per seed: a finished seed is skipped, anything else is (re)started and train.py
# resumes from the checkpoint in its folder. The first failing seed stops the loop (its status).
run_seeds() {  # TEMPLATE ARGS...
    local template=$1 seed folder arg
    local -a argv
    shift
    for seed in $SEEDS; do
        folder=${template//'{seed}'/"$seed"}
        argv=()
        for arg in "$@"; do
            case $arg in
                '{seed}') argv+=("$seed") ;;
                '{dir}') argv+=("$folder") ;;
                *) argv+=("$arg") ;;
            esac
        done
        run_train "$folder" "${argv[@]}" || return
    done
}

require_checkpoint() {  # FILE LINE...
    [ -f "$1" ] && return 0
    shift
    printf '%s\n' "$@" >&2
    return 2
}

# Evaluations are not resumed: results.json is the only sign of a finished one.
run_eval() {  # DIR ARGS...
    local dir=$1
    shift
    if [ -f "$dir/results.json" ]; then
        echo "Skip: finished evaluation at $dir"
        return 0
    fi
    echo "Run: ${dir}"
    (cd "$REPO" && "${PY[@]}" train.py "$@")
}

# Tools ask the registry rather than naming methods, so a new method needs no script change.
describe_method() {  # METHOD [DATASET SHOTS]: sets FACTS and RECIPE_OPTS
    local out key value
    out=$(cd "$REPO" && "${PY[@]}" -m engine.describe "$@") || return 2
    declare -gA FACTS=()
    RECIPE_OPTS=()
    while IFS='=' read -r key value; do
        case $key in
            *.*) RECIPE_OPTS+=("$key" "$value") ;;  # a config key; the facts' names have no dot
            *) FACTS[$key]=$value ;;
        esac
    done <<< "$out"
}
