# Checks and helpers shared by every per-method driver (scripts/<method>/*.sh). Source it after
# setting nothing: `. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"`; it defines functions and
# REPO / CALLER, and runs nothing.
#
#   from_caller PATH           a path given by the user, relative to where the script started
#   require_data DATA          checks the dataset root; prints it absolute
#   require_config FILE...     checks config files (relative to the repo); lists the choices
#   backbone_tag NAME          a short folder-safe tag for a backbone name or a weights file path
#   finished DIR               true when DIR holds a finished run (results.json, or a log with
#                              "Finish training" followed by "=> result")
#   run_train DIR ARGS...      skip a finished DIR, else (re)run `train.py ARGS` (which must
#                              include --output-dir DIR; a rerun resumes from its checkpoint)

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
