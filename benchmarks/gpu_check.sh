#!/usr/bin/env bash
# The GPU check (issue 14): one short script for a lent CUDA machine, run from the repo root with
# .gpu/ (benchmarks/gpu_prepare.sh) carried. Writes its tables and logs to ${OUT:-/tmp/gpu-check}.
#
# 1. bench_train.py on CUDA, bf16 and fp32: the paper-size teacher's (8 x 2560 -> 14000) training
#    throughput against the peak matmul rate (MFU), and 10 stacked vs looped teachers;
# 2. the recipe's training stages (teachers, ensemble, distill) on the carried smoke shards, on one
#    GPU with DDP and bf16 (train.precision=auto picks it), timed by the stage summaries.
# 3. stored vs online vs hard-target student steps (bench_targets.py cost), tiny and paper sizes.
# 4. the decode stage's forward on the GPU against this node's CPU (bench_decode.py --stage-path:
#    the ensemble of step 2 on the smoke dev set; forward and search seconds per hour of audio).
# Budget: ~8 minutes on an H200.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .gpu/whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'; } 2>&1 | tee "$OUT/env.txt"

# 1. throughput and MFU (paper size and the CPU size), stacked vs looped
timeout 240 python3 benchmarks/bench_train.py --sizes paper,cpu --device cuda --dtype bfloat16 --batch 1024 \
  --steps 20 --k 10 --k-paper 10 --json "$OUT/bench_train_bf16.json" 2>&1 | tee "$OUT/bench_train_bf16.txt"
timeout 120 python3 benchmarks/bench_train.py --sizes paper --device cuda --dtype float32 --batch 1024 \
  --steps 10 --k-paper 2 --json "$OUT/bench_train_fp32.json" 2>&1 | tee "$OUT/bench_train_fp32.txt"

# 2. the training stages on one GPU, DDP, on the carried smoke shards
if [ -d .gpu/exp ]; then
  rm -rf /tmp/gpu-exp && cp -r .gpu/exp /tmp/gpu-exp
  timeout 300 python3 -m asr_kd.recipes.librispeech --preset smoke --exp-dir /tmp/gpu-exp --stage teachers \
    --stop-stage distill --set train.accelerator=gpu --set train.devices=1 --set train.strategy=ddp \
    > "$OUT/recipe_gpu.log" 2>&1
  echo "recipe exit code $?" | tee -a "$OUT/recipe_gpu.log"
  for s in teachers ensemble distill; do
    python3 -m asr_kd.recipes.librispeech --preset smoke --exp-dir /tmp/gpu-exp --show $s > "$OUT/show_$s.json" 2>/dev/null
  done
  python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
for s in ("teachers", "ensemble", "distill"):
    try:
        d = json.load(open(f"/tmp/gpu-exp/{s}/DONE.json"))
        print(s, "wall", d.get("wall_time_s"), "s")
    except OSError:
        print(s, "not finished")
PY
fi
# 3. student steps: hard targets vs stored top-k targets vs the online ensemble
timeout 120 python3 benchmarks/bench_targets.py cost --device cuda --batch 2048 --steps 50 --paper-steps 20 \
  --online-steps 10 --json "$OUT/bench_targets_cost.json" 2>&1 | tee "$OUT/bench_targets_cost.txt"
# 4. the decode forward on the GPU and on the CPU (search by 8 processes), the ensemble trained in step 2
if [ -f /tmp/gpu-exp/ensemble/DONE.json ]; then
  for dev in cuda cpu; do
    timeout 90 python3 benchmarks/bench_decode.py --exp-dir /tmp/gpu-exp --stage-path --system ensemble \
      --split dev --jobs 8 --device "$dev" 2>&1 | tee "$OUT/bench_decode_$dev.txt"
  done
fi
ls -la "$OUT"
