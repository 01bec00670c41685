#!/usr/bin/env bash
# Fit the linear probe (CoOp's lpclip protocol) on one dataset for several seeds.
# Checks its arguments, then runs scripts/run.sh (the seed loop shared by every method).
#
#   bash scripts/linear_probe/main.sh DATASET CFG SHOTS [DATA]
#
#   DATASET  name of a file in configs/datasets/ without .yaml (caltech101, imagenet, ...)
#   CFG      name of a file in configs/trainers/LinearProbe/ without .yaml (rn50, vit_b16, ...)
#   SHOTS    shots per class (1, 2, 4, 8, 16)
#   DATA     dataset root; the 4th argument wins over the DATA environment variable
#
# Environment: SEEDS ("1 2 3"), OUTPUT (output), BACKBONE (MODEL.BACKBONE.NAME override),
# EXTRA_OPTS (more KEY VALUE config overrides), PYTHON (python), DATA.
# See scripts/linear_probe/README.md.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

usage() {
    echo "usage: bash scripts/linear_probe/main.sh DATASET CFG SHOTS [DATA]" >&2
    echo "       (DATA may also come from \$DATA)" >&2
}
check_nargs 3 4 $# || exit 2

DATASET=$1
CFG=$2
SHOTS=$3
DATA=${4:-${DATA:-}}

check_data 4th || exit 2

# The fit takes no epochs: a rerun of an unfinished seed starts it again.
exec bash "$REPO/scripts/run.sh" LinearProbe "$DATASET" "$CFG" "$SHOTS" "$DATA"
