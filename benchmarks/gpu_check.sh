#!/usr/bin/env bash
# The GPU check (issues 14 and 34): one short script for a lent CUDA machine, run from the repo root with
# .gpu/ (benchmarks/gpu_prepare.sh) carried. Writes its logs and $OUT/gpu_check.md, the table for
# benchmarks/README.md, to ${OUT:-/tmp/gpu-check}.
#
#   benchmarks/gpu_check.sh          # on one GPU: budget under 8 minutes on an H100 (each step has a cap)
#   benchmarks/gpu_check.sh --cpu    # the same steps, reduced, on the CPU: the rehearsal (builds .gpu/exp
#                                    # with gpu_prepare.sh --no-wheels when it is missing)
#
# 1. bench_train.py: the paper-size teacher's (8 x 2560 -> 14000) bf16 training step, its MFU (of the
#    H100's 989 TFLOP/s bf16 dense peak and of the peak matmul rate measured there), and 10 stacked vs
#    looped CPU-size teachers;
# 2. bench_data.py: the loader's supply on this node (old and new path, in turns) against the demand of
#    one H100 at 50 % MFU, for every preset's model;
# 3. the recipe's training stages (teachers, ensemble, distill) on the carried smoke shards, on one
#    device with DDP (train.precision=auto: bf16 on the GPU), timed by the stage summaries;
# 4. bench_targets.py cost: a stored-target student step against a hard-target step (and online),
#    tiny and paper sizes;
# 5. bench_decode.py --stage-path: the decode stage's forward (and search) per audio hour, on the
#    ensemble of step 3, on the GPU and on this node's CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=gpu
[ "${1:-}" = "--cpu" ] && MODE=cpu
OUT=${OUT:-/tmp/gpu-check}
PY=${PY:-python3}
EXP=${EXP:-/tmp/gpu-exp}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .gpu/whl ] && [ $MODE = gpu ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
start=$(date +%s)
: > "$OUT/steps.txt"
step() { echo "== $1 ($(( $(date +%s) - start )) s)" | tee -a "$OUT/steps.txt"; }
if [ $MODE = gpu ]; then
  DEV=cuda ACC=gpu
  TRAIN="--sizes paper,cpu --dtype bfloat16 --batch 2048 --steps 20 --k 10 --k-paper 2"
  DATA="--utts 800 --repeats 2"
  TARGETS="--batch 2048 --steps 50 --paper-batch 2048 --paper-steps 20 --online-steps 10"
  DECODE_DEVICES="cuda cpu"
  CAP_TRAIN=100 CAP_DATA=90 CAP_RECIPE=120 CAP_TARGETS=60 CAP_DECODE=45  # seconds: under 8 minutes in all
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } > "$OUT/env.txt" 2>&1
else
  DEV=cpu ACC=cpu
  TRAIN="--sizes paper,cpu --dtype float32 --batch 64 --steps 2 --k 2 --k-paper 1"
  DATA="--utts 100 --repeats 1 --no-features"
  TARGETS="--batch 256 --steps 5 --paper-batch 32 --paper-steps 2 --online-steps 1"
  DECODE_DEVICES="cpu"
  CAP_TRAIN=300 CAP_DATA=300 CAP_RECIPE=600 CAP_TARGETS=300 CAP_DECODE=300  # a shared 2-core CPU is slow
  : > "$OUT/env.txt"
  [ -d .gpu/exp ] || PY=$PY benchmarks/gpu_prepare.sh --no-wheels > "$OUT/prepare.log" 2>&1
fi
start=$(date +%s)
{ lscpu | grep "Model name" | tr -s " "; } >> "$OUT/env.txt" 2>&1
"$PY" -c 'import torch, os; print("torch", torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU", os.cpu_count(), "CPUs")' \
  2>&1 | tee -a "$OUT/env.txt"

step "1. teacher step (bench_train)"
timeout $CAP_TRAIN "$PY" benchmarks/bench_train.py --device $DEV $TRAIN --json "$OUT/bench_train.json" \
  > "$OUT/bench_train.txt" 2>&1
step "2. loader supply (bench_data)"
timeout $CAP_DATA "$PY" benchmarks/bench_data.py --device $DEV --path both $DATA --json "$OUT/bench_data.json" \
  > "$OUT/bench_data.txt" 2>&1
step "3. training stages (smoke shards)"
if [ -d .gpu/exp ]; then
  rm -rf "$EXP" && cp -r .gpu/exp "$EXP"
  timeout $CAP_RECIPE "$PY" -m asr_kd.recipes.librispeech --preset smoke --exp-dir "$EXP" --stage teachers \
    --stop-stage distill --set train.accelerator=$ACC --set train.devices=1 --set train.strategy=ddp \
    > "$OUT/recipe.log" 2>&1
  echo "recipe exit code $?" >> "$OUT/recipe.log"
fi
step "4. student steps (bench_targets cost)"
timeout $CAP_TARGETS "$PY" benchmarks/bench_targets.py cost --device $DEV $TARGETS --json "$OUT/bench_targets_cost.json" \
  > "$OUT/bench_targets_cost.txt" 2>&1
step "5. decode forward (bench_decode --stage-path)"
if [ -f "$EXP/ensemble/DONE.json" ]; then
  for dev in $DECODE_DEVICES; do
    timeout $CAP_DECODE "$PY" benchmarks/bench_decode.py --exp-dir "$EXP" --stage-path --system ensemble \
      --split dev --jobs 8 --device "$dev" > "$OUT/bench_decode_$dev.txt" 2>&1
  done
fi
step "done"
"$PY" benchmarks/gpu_table.py "$OUT" "$EXP" "$MODE" > "$OUT/gpu_check.md"
cat "$OUT/gpu_check.md"
