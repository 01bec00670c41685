#!/usr/bin/env bash
# Smoke test of the CUDA paths: TaskRes online and cached, PREC fp16 and amp, on a GPU when one
# is present (on a CPU machine it runs the same grid, where fp16 falls back to fp32 and amp to
# bf16 autocast). Prints one line per run: mode, precision, seconds, accuracy, peak memory.
#
#   bash benchmarks/gpu_smoke.sh                 # tiny pretrained CLIP, synthetic EuroSAT
#   BACKBONE=RN50 DATA=/data bash benchmarks/gpu_smoke.sh   # real weights and data if present
#
# Environment: BACKBONE (default: the tiny CLIP built by synthetic.tiny_clip), DATA (default: a
# synthetic EuroSAT in a temporary folder), EPOCHS (20), SHOTS (16), PYTHON (python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
EPOCHS=${EPOCHS:-20}
SHOTS=${SHOTS:-16}
if [ -z "${DATA:-}" ]; then
    DATA=$WORK/data
    "$PY" -c "from synthetic.layouts import write_eurosat; write_eurosat('$DATA', per_class=24)"
fi
BACKBONE=${BACKBONE:-$("$PY" -c "from synthetic.tiny_clip import pretrained_tiny_clip_path; print(pretrained_tiny_clip_path())")}
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu (no CUDA: fp16 runs fp32, amp runs bf16 autocast)')"
printf '%-8s %-5s %8s %9s %10s\n' mode prec seconds accuracy peak_MB
for MODE in online cached; do
    for PREC in fp16 amp; do
        OUT=$WORK/$MODE-$PREC
        START=$(date +%s.%N)
        "$PY" train.py --root "$DATA" --seed 1 --trainer TaskRes \
            --dataset-config-file configs/datasets/eurosat.yaml \
            --config-file configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml --output-dir "$OUT" \
            DATASET.NUM_SHOTS "$SHOTS" OPTIM.MAX_EPOCH "$EPOCHS" MODEL.BACKBONE.NAME "$BACKBONE" \
            TRAINER.TaskRes.PREC "$PREC" FEATURES.MODE "$MODE" FEATURES.CACHE_DIR "$WORK/store" \
            TRAIN.TENSORBOARD False > "$WORK/$MODE-$PREC.log" 2>&1 || { tail -20 "$WORK/$MODE-$PREC.log"; exit 1; }
        END=$(date +%s.%N)
        "$PY" - "$OUT/results.json" "$MODE" "$PREC" "$START" "$END" <<'PYEOF'
import json, sys
res = json.load(open(sys.argv[1]))
mode, prec, start, end = sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
print(f"{mode:<8} {prec:<5} {end - start:8.1f} {res['accuracy']:8.2f}% {res['peak_memory_mb']:10.1f}")
PYEOF
    done
done
