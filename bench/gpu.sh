#!/usr/bin/env bash
# The GPU path in one command, <= 8 minutes on one GPU (issue 14.4):
#   bash bench/gpu.sh            results in runs/bench/gpu/ (OUT=... to choose)
# 1. the tests marked cuda; 2. BPTT throughput against SpikingJelly and ES members/s at
# P = 512 ... 65,536 (bench/gpu.py); 3. a short MNIST-1D zeroth-order run on the GPU.
# Uses .venv-bench (make bench-venv: SpikingJelly) when present, else .venv.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x .venv-bench/bin/python ] && PY=.venv-bench/bin/python
OUT=${OUT:-runs/bench/gpu}
mkdir -p "$OUT"
if ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "bench/gpu.sh: torch sees no CUDA device (bench/gpu.py --device cpu checks the code)" >&2
  exit 2
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
status=0
timeout 150 "$PY" -m pytest -q -m cuda tests 2>&1 | tee "$OUT/cuda-tests.txt" || status=1
timeout 240 "$PY" bench/gpu.py --json "$OUT/gpu.json" > "$OUT/gpu.log" 2>&1 || status=1
timeout 90 "$PY" -m spikeopt.cli run mnist1d-es trainer.device=cuda trainer.epochs=1 \
  --quiet --out "$OUT/mnist1d-es-$(date +%s)" 2>&1 | tee "$OUT/mnist1d-es.txt" || status=1
echo "bench/gpu.sh: outputs in $OUT (exit $status)"
exit $status
