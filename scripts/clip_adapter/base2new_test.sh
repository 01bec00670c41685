#!/usr/bin/env bash
# Base-to-new for CLIP_Adapter in CoCoOp's layout (phase: test): see scripts/base2new.sh.
#
#   bash scripts/clip_adapter/base2new_test.sh DATASET SEED [DATA]
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/../base2new.sh" test CLIP_Adapter "$@"
