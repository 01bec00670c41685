#!/usr/bin/env bash
# Smoke test of the CUDA paths, on a GPU when one is present (on a CPU machine it runs the same
# grid, where fp16 falls back to fp32 and amp to bf16 autocast): TaskRes online and cached under
# PREC fp16 and amp, then MaskTuning (pixels, masked encoder) under PREC fp32, fp16 and amp with
# the teacher run per batch, and with the teacher read from the feature store. Prints one line
# per run: method, mode, precision, seconds, accuracy, peak memory. Last, the image pipeline's
# views/s per CPU core (PIL decode-each, decode-once, uint8 tensor path) next to the encoders'
# images/s on the GPU (benchmarks/pipeline.py).
#
#   bash benchmarks/gpu_smoke.sh                 # tiny pretrained CLIP, synthetic EuroSAT
#   BACKBONE=RN50 DATA=/data bash benchmarks/gpu_smoke.sh   # real weights and data if present
#
# Environment: BACKBONE (default: the tiny CLIP built by synthetic.tiny_clip), DATA (default: a
# synthetic EuroSAT in a temporary folder), EPOCHS (20; MaskTuning: MT_EPOCHS, 5), SHOTS (16),
# PYTHON (python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
EPOCHS=${EPOCHS:-20}
MT_EPOCHS=${MT_EPOCHS:-5}
SHOTS=${SHOTS:-16}
if [ -z "${DATA:-}" ]; then
    DATA=$WORK/data
    "$PY" -c "from synthetic.layouts import write_eurosat; write_eurosat('$DATA', per_class=24)"
fi
BACKBONE=${BACKBONE:-$("$PY" -c "from synthetic.tiny_clip import pretrained_tiny_clip_path; print(pretrained_tiny_clip_path())")}
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu (no CUDA: fp16 runs fp32, amp runs bf16 autocast)')"
printf '%-10s %-15s %-5s %8s %9s %10s\n' method mode prec seconds accuracy peak_MB

run() {  # METHOD MODE PREC train.py-ARGS...
    local method=$1 mode=$2 prec=$3 out=$WORK/$1-$2-$3 start end
    shift 3
    start=$(date +%s.%N)
    "$PY" train.py --root "$DATA" --seed 1 --trainer "$method" --output-dir "$out" \
        --dataset-config-file configs/datasets/eurosat.yaml DATASET.NUM_SHOTS "$SHOTS" \
        MODEL.BACKBONE.NAME "$BACKBONE" FEATURES.CACHE_DIR "$WORK/store" TRAIN.TENSORBOARD False \
        "$@" > "$out.log" 2>&1 || { tail -20 "$out.log"; exit 1; }
    end=$(date +%s.%N)
    "$PY" - "$out/results.json" "$method" "$mode" "$prec" "$start" "$end" <<'PYEOF'
import json, sys
res = json.load(open(sys.argv[1]))
method, mode, prec, start, end = sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), float(sys.argv[6])
print(f"{method:<10} {mode:<15} {prec:<5} {end - start:8.1f} {res['accuracy']:8.2f}% {res['peak_memory_mb']:10.1f}")
PYEOF
}

for MODE in online cached; do
    for PREC in fp16 amp; do
        run TaskRes "$MODE" "$PREC" --config-file configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml \
            OPTIM.MAX_EPOCH "$EPOCHS" TRAINER.TaskRes.PREC "$PREC" FEATURES.MODE "$MODE"
    done
done
# lr x steps well above the 5e-3 a score travels to flip a mask, so the masks do change
for TEACHER in forward store; do
    for PREC in fp32 fp16 amp; do
        run MaskTuning "teacher-$TEACHER" "$PREC" --config-file configs/trainers/MaskTuning/vit_b16.yaml \
            OPTIM.MAX_EPOCH "$MT_EPOCHS" OPTIM.LR 1e-3 DATALOADER.TRAIN_X.BATCH_SIZE 16 \
            TRAINER.MaskTuning.PREC "$PREC" MASK.TEACHER "$TEACHER"
    done
done
"$PY" benchmarks/pipeline.py --images 20 --repeats 2 --work "$WORK/pipeline" | grep -v '^+ \|^Building'
