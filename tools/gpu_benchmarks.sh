#!/usr/bin/env bash
# The GPU benchmarks at the paper's scale in one GPU session of BUDGET seconds (570 by default), results in $OUT.
#
#   OUT=/path/to/out SAMEDGE_DATA=/path/to/data bash tools/gpu_benchmarks.sh
#
# 1. and 2. the benchmark stages of tools/gpu_paper_runs.py, planned from the stored costs: benchmarks/sam_speed.py
#    --preset paper, strict float32 then TF32 (SAM steps/s with checks, this library against the JAX reference loop),
#    and benchmarks/sharpness_benchmark.py --preset paper bounded by the time left -> $OUT/session.json and
#    $OUT/2-sam-speed.tgz, $OUT/3-sharpness.tgz (unpack with: python tools/gpu_unpack.py "$OUT")
# 3. with two minutes or more left, benchmarks/distributed_scaling.py --preset paper: steps/s and check cost of the
#    plain run against the same run under torchrun on one GPU (the NCCL path, which should cost no more than a few
#    percent), and on every GPU when there are several -> $OUT/distributed-<gpu-name>.json (copy it by hand)
set -euo pipefail
: "${OUT:?set OUT to the folder that receives the results}"
budget="${BUDGET:-570}"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python tools/gpu_paper_runs.py --out "$OUT" --stages sam-speed,sharpness --budget "$((budget - SECONDS))"
left=$((budget - SECONDS))
if ((left >= 120)); then
    timeout "$((left - 10))" python benchmarks/distributed_scaling.py --preset paper --repeats 2 --out-dir "$OUT" \
        --timeout "$((left / 4))" 2>&1 | tee "$OUT/distributed_scaling.log" ||
        echo "distributed scaling stopped: the time left (${left} s) ran out"
else
    echo "distributed scaling skipped: ${left} s left of ${budget} s"
fi
