#!/usr/bin/env bash
# Train CoOp on one dataset for several seeds (CoOp's scripts/coop/main.sh, same arguments).
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
SEEDS=${SEEDS:-1 2 3}
OUTPUT=${OUTPUT:-output}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"

case $CTP in
    end|middle|front) ;;
    *) echo "error: CTP must be end, middle or front, got '$CTP'" >&2; usage; exit 2 ;;
esac
case $CSC in
    True|False) ;;
    *) echo "error: CSC must be True or False, got '$CSC'" >&2; usage; exit 2 ;;
esac
check_data 7th || exit 2
OUTPUT=$(from_caller "$OUTPUT")

DATASET_CFG=configs/datasets/${DATASET}.yaml
TRAINER_CFG=configs/trainers/CoOp/${CFG}.yaml
require_config "$DATASET_CFG" "$TRAINER_CFG" || exit 2

OPTS=(TRAINER.COOP.N_CTX "$NCTX" TRAINER.COOP.CSC "$CSC" TRAINER.COOP.CLASS_TOKEN_POSITION "$CTP"
      DATASET.NUM_SHOTS "$SHOTS")
backbone_override "$CFG"  # $BACKBONE: folder CFG-<tag>, MODEL.BACKBONE.NAME in OPTS

# Each seed of $SEEDS: skipped when finished, else (re)run; train.py resumes from its checkpoint.
run_seeds "${OUTPUT}/${DATASET}/CoOp/${CFG_TAG}_${SHOTS}shots/nctx${NCTX}_csc${CSC}_ctp${CTP}/seed{seed}" \
    --root "$DATA" \
    --seed {seed} \
    --trainer CoOp \
    --dataset-config-file "$DATASET_CFG" \
    --config-file "$TRAINER_CFG" \
    --output-dir {dir} \
    "${OPTS[@]}" \
    ${EXTRA[@]+"${EXTRA[@]}"}
