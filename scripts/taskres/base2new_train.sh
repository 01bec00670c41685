#!/usr/bin/env bash
# Base-to-new for TaskRes in CoCoOp's layout (phase: train): see scripts/base2new.sh.
#
#   bash scripts/taskres/base2new_train.sh DATASET SEED [DATA]
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/../base2new.sh" train TaskRes "$@"
