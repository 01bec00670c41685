# Helpers shared by train_regular.sh, train_enhance.sh, enhance_base.sh and zeroshot_all.sh.
# Source it (`. scripts/taskres/grid.sh`); it defines functions and constants and runs nothing.
#
# The paper's grid: 11 datasets x 1/2/4/8/16 shots, RN50; the per-(dataset, shots) config and
# alpha come from the TaskRes recipe in configs/trainers/TaskRes/ (python -m engine.describe).

GRID_DATASETS="imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101"
GRID_SHOTS="1 2 4 8 16"
DG_TARGETS="imagenetv2 imagenet_sketch imagenet_a imagenet_r"
GRID_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
GRID_CALLER=$(pwd -P)

# A relative path given by the user is relative to the folder the script was started in.
grid_from_caller() {
    case $1 in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$GRID_CALLER/$1" ;;
    esac
}

grid_recipe() {  # METHOD DATASET SHOTS FIELD -> one field of the method's recipe table
    (cd "$GRID_REPO" && "${PYTHON:-python}" -m engine.describe "$1" "$2" "$3" --get "$4")
}

grid_alpha() {  # DATASET -> residual scale
    grid_recipe TaskRes "$1" 16 TRAINER.TaskRes.RESIDUAL_SCALE
}

grid_cfg() {  # DATASET SHOTS -> name of a configs/trainers/TaskRes/ file
    grid_recipe TaskRes "$1" "$2" cfg
}

# DATASET.NAME of configs/datasets/DATASET.yaml (the class name used by strong_base/).
grid_class_name() {
    local file=$GRID_REPO/configs/datasets/$1.yaml name
    if [ ! -f "$file" ]; then
        echo "error: $file not found" >&2
        return 2
    fi
    name=$(awk '$1 == "NAME:" { v = $2; gsub(/["'\''\r]/, "", v); print v; exit }' "$file")
    if [ -z "$name" ]; then
        echo "error: no DATASET.NAME in $file" >&2
        return 2
    fi
    printf '%s\n' "$name"
}

# Backbone tag used in strong_base/ folder names: lowercase, '/' and '-' removed (RN50 -> rn50,
# ViT-B/16 -> vitb16).
grid_backbone_tag() {
    printf '%s' "$1" | tr '[:upper:]' '[:lower:]' | tr -d '/-'
}

# Checks a space- or comma-separated selection against the allowed words; prints it normalized.
grid_select() {  # WHAT SELECTION ALLOWED
    local what=$1 allowed=" $3 " item out="" items
    read -r -a items <<< "${2//,/ }"
    for item in ${items[@]+"${items[@]}"}; do
        if [[ $allowed != *" $item "* ]]; then
            echo "error: unknown $what '$item'; choose from:$allowed" >&2
            return 2
        fi
        out+="$item "
    done
    if [ -z "$out" ]; then
        echo "error: empty $what selection" >&2
        return 2
    fi
    printf '%s\n' "${out% }"
}

# SHARD=i/N runs every N-th job starting at job i (0-based), so that N processes (GPUs, Slurm
# array tasks) split one grid without overlap. Sets SHARD_INDEX and SHARD_COUNT.
grid_parse_shard() {
    local shard=${SHARD:-0/1}
    if [[ ! $shard =~ ^([0-9]+)/([0-9]+)$ ]] || [ "${BASH_REMATCH[2]}" -lt 1 ] \
            || [ "${BASH_REMATCH[1]}" -ge "${BASH_REMATCH[2]}" ]; then
        echo "error: SHARD must be i/N with 0 <= i < N (e.g. SHARD=0/4), got '$shard'" >&2
        return 2
    fi
    SHARD_INDEX=${BASH_REMATCH[1]}
    SHARD_COUNT=${BASH_REMATCH[2]}
}

# A failed grid job: stop (rerunning resumes), or with KEEP_GOING=1 record it in FAILED and go on.
fail() {  # JOB-NAME MESSAGE
    if [ "$KEEP_GOING" = 1 ]; then
        FAILED+=("$1")
        echo "  failed: $2 (KEEP_GOING=1, going on)" >&2
    else
        echo "error: $2; rerun to resume, or set KEEP_GOING=1" >&2
        exit 1
    fi
}
