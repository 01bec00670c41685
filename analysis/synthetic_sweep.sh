#!/usr/bin/env bash
# A small synthetic sweep and both figures, offline: synthetic EuroSAT, DTD and OxfordPets, the
# tiny CLIP, zero-shot CLIP (ZeroshotCLIP2), TaskRes on the regular base and on enhanced bases
# produced here, 1/2/4/8/16 shots x seeds 1-3 with the paper recipe, cached features.
#   bash analysis/synthetic_sweep.sh [OUT]      (about 5 minutes on 2 CPU cores)
# Writes OUT/output (runs), OUT/curves.png and OUT/difficulty.png (docs/figures/ holds a copy).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python}
OUT=$(realpath -m "${1:-output/synthetic_sweep}")
DATA=$OUT/data RUNS=$OUT/output
TC=$($PY -c "from synthetic.tiny_clip import pretrained_tiny_clip_path as p; print(p())")
$PY -c "
from synthetic.layouts import write_eurosat, write_dtd, write_oxford_pets
for w in (write_eurosat, write_dtd, write_oxford_pets): w('$DATA', per_class=40)"
COMMON="MODEL.BACKBONE.NAME $TC DATALOADER.NUM_WORKERS 2 TRAIN.TENSORBOARD False FEATURES.MODE cached FEATURES.CACHE_DIR $OUT/cache"
for DS in eurosat dtd oxford_pets; do
    echo "== $DS"
    $PY train.py --root "$DATA" --trainer ZeroshotCLIP2 --dataset-config-file configs/datasets/$DS.yaml \
        --config-file configs/trainers/ZeroshotCLIP/rn50.yaml --output-dir "$RUNS/ZeroshotCLIP2/rn50/$DS" \
        --eval-only $COMMON > /dev/null
    $PY sweep.py --shots 1 2 4 8 16 --seeds 1 2 3 --paper-recipe --root "$DATA" --trainer TaskRes \
        --dataset-config-file configs/datasets/$DS.yaml --output-dir "$RUNS/$DS/TaskRes" $COMMON > /dev/null
    for K in 1 2 4 8 16; do
        BASE=$RUNS/enhanced_base/$DS/${K}shots
        $PY train.py --root "$DATA" --seed 1 --trainer TaskResEnhancedBase --dataset-config-file configs/datasets/$DS.yaml \
            --config-file configs/trainers/TaskResEnhancedBase/adam_lr1e-4_B256_ep50.yaml --output-dir "$BASE" \
            DATASET.NUM_SHOTS $K $COMMON > /dev/null
        $PY sweep.py --shots $K --seeds 1 2 3 --paper-recipe --root "$DATA" --trainer TaskRes \
            --dataset-config-file configs/datasets/$DS.yaml --output-dir "$RUNS/$DS/TaskRes" \
            --enhanced-base "$BASE/strong_base.pth.tar" $COMMON > /dev/null
    done
done
$PY -m analysis.curves "$RUNS" --dataset all --out "$OUT/curves.png" --csv "$OUT/curves.csv"
$PY -m analysis.difficulty "$RUNS" --zeroshot "$RUNS/ZeroshotCLIP2" --out "$OUT/difficulty.png" --csv "$OUT/difficulty.csv"
