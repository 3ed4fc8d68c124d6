#!/usr/bin/env bash
# Accelerator check for issue 6, on a machine with an NVIDIA GPU: the demo and the CIFAR-10 AlexNet
# recipe (on generated 32 px images, no download) with --trainer.accelerator gpu, full precision
# against 16-mixed, then bf16-mixed with channels_last; prints val/acc and images/s, writes
# benchmarks/results/gpu_check*.json. Extra arguments go to every run, e.g. --epochs 5.
#   benchmarks/gpu_check.sh
#   benchmarks/gpu_check.sh --accelerator cpu --precision 32-true --limit-batches 5 --epochs 1  # dry run
set -euo pipefail
cd "$(dirname "$0")/.."
python -m benchmarks.gpu_check --precision 32-true 16-mixed "$@"
if python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else 1)"; then
  python -m benchmarks.gpu_check --precision 32-true bf16-mixed --channels-last \
    --out benchmarks/results/gpu_check_bf16_channels_last.json "$@"
fi
