#!/usr/bin/env bash
# Base-to-new for CoOp in CoCoOp's layout (phase: train): see scripts/base2new.sh.
#
#   bash scripts/coop/base2new_train.sh DATASET SEED [DATA]
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/../base2new.sh" train CoOp "$@"
