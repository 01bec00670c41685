#!/usr/bin/env bash
# Train CoOp on one dataset for several seeds (CoOp's scripts/coop/main.sh, same arguments).
# Checks its arguments, then runs scripts/run.sh (the seed loop shared by every method).
#
#   bash scripts/coop/main.sh DATASET CFG CTP NCTX SHOTS CSC [DATA]
#
#   DATASET  name of a file in configs/datasets/ without .yaml (caltech101, imagenet, ...)
#   CFG      name of a file in configs/trainers/CoOp/ without .yaml (rn50, rn50_ep50, rn50_ctxv1, ...)
#   CTP      class token position: end, middle or front (TRAINER.COOP.CLASS_TOKEN_POSITION)
#   NCTX     number of context tokens (TRAINER.COOP.N_CTX; unused by *_ctxv1 configs)
#   SHOTS    shots per class (1, 2, 4, 8, 16)
#   CSC      class-specific context: True or False (TRAINER.COOP.CSC)
#   DATA     dataset root; the 7th argument wins over the DATA environment variable
#
# Output: $OUTPUT/DATASET/CoOp/CFG_SHOTSshots/nctxNCTX_cscCSC_ctpCTP/seedS, as CoOp's script.
# Environment: SEEDS ("1 2 3"), OUTPUT (output), BACKBONE (MODEL.BACKBONE.NAME override),
# EXTRA_OPTS (more KEY VALUE config overrides), PYTHON (python), DATA.
# See scripts/coop/README.md.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

usage() {
    echo "usage: bash scripts/coop/main.sh DATASET CFG CTP NCTX SHOTS CSC [DATA]" >&2
    echo "       (CTP: end|middle|front; CSC: True|False; DATA may also come from \$DATA)" >&2
}
check_nargs 6 7 $# || exit 2

DATASET=$1
CFG=$2
CTP=$3
NCTX=$4
SHOTS=$5
CSC=$6
DATA=${7:-${DATA:-}}

case $CTP in
    end|middle|front) ;;
    *) echo "error: CTP must be end, middle or front, got '$CTP'" >&2; usage; exit 2 ;;
esac
case $CSC in
    True|False) ;;
    *) echo "error: CSC must be True or False, got '$CSC'" >&2; usage; exit 2 ;;
esac
check_data 7th || exit 2

exec bash "$REPO/scripts/run.sh" CoOp "$DATASET" "$CFG" "$SHOTS" "$DATA" --variant "nctx${NCTX}_csc${CSC}_ctp${CTP}" -- \
    TRAINER.COOP.N_CTX "$NCTX" TRAINER.COOP.CSC "$CSC" TRAINER.COOP.CLASS_TOKEN_POSITION "$CTP" DATASET.NUM_SHOTS "$SHOTS"
