#!/usr/bin/env bash
# The GPU benchmarks at the paper's scale in one GPU session (about 12 minutes on an H200), results in $OUT.
#
#   OUT=/path/to/out SAMEDGE_DATA=/path/to/data bash tools/gpu_benchmarks.sh
#
# 1. benchmarks/sharpness_benchmark.py --preset paper (bounded to 240 s): HVP costs, solvers, cost to
#    accuracy, warm starts, overhead, memory, TF32 -> $OUT/<gpu-name>.json
# 2. benchmarks/sam_speed.py --preset paper --precision both: SAM steps/s with checks, this library against
#    the JAX reference loop, strict float32 and TF32 -> $OUT/sam-speed-<gpu-name>.json
# 3. benchmarks/distributed_scaling.py --preset paper: steps/s and check cost of the plain run against the same
#    run under torchrun on one GPU (the NCCL path, which should cost no more than a few percent), and on every
#    GPU when there are several -> $OUT/distributed-<gpu-name>.json
# Copy the JSON files to results/benchmark/ and rebuild the book to show them.
set -euo pipefail
: "${OUT:?set OUT to the folder that receives the results}"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python benchmarks/sharpness_benchmark.py --preset paper --device cuda --max-seconds 240 --out-dir "$OUT" \
    2>&1 | tee "$OUT/sharpness_benchmark.log"
python benchmarks/sam_speed.py --preset paper --precision both --out-dir "$OUT" --timeout 400 \
    2>&1 | tee "$OUT/sam_speed.log"
python benchmarks/distributed_scaling.py --preset paper --repeats 2 --out-dir "$OUT" --timeout 300 \
    2>&1 | tee "$OUT/distributed_scaling.log"
