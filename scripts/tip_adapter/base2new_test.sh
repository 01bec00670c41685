#!/usr/bin/env bash
# Base-to-new for TipAdapter in CoCoOp's layout (phase: test): see scripts/base2new.sh.
#
#   bash scripts/tip_adapter/base2new_test.sh DATASET SEED [DATA]
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/../base2new.sh" test TipAdapter "$@"
