#!/usr/bin/env bash
# Cross-dataset transfer, step 1 (the conditional-prompt paper's xd_train.sh, for any registered
# method): train METHOD on ImageNet with SHOTS (16) shots and its recipe, for one seed.
#
#   bash scripts/xd_train.sh METHOD SEED [DATA]
#
# Output: $OUTPUT/imagenet/METHOD/CFG_SHOTSshots/seedSEED (scripts/run.sh's folder). Then
# scripts/xd_test.sh evaluates that model on each target dataset. An evaluation-only method is
# evaluated on ImageNet here.
# Environment: SHOTS (16), SOURCE (imagenet), OUTPUT (output), BACKBONE, EXTRA_OPTS, PYTHON, DATA.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    echo "usage: bash scripts/xd_train.sh METHOD SEED [DATA]" >&2
}
check_nargs 2 3 $# || exit 2
SEEDS=$2 exec bash "$REPO/scripts/run.sh" "$1" "${SOURCE:-imagenet}" recipe "${SHOTS:-16}" ${3+"$3"}
