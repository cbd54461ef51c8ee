#!/usr/bin/env bash
# Prove latentdiff on a CUDA machine: test suite on CUDA, diffusers oracles, U-Net throughput, a short
# end-to-end run, seed reproducibility CPU vs GPU, two-rank DDP. Writes report.json + report.md into the
# folder given (default $OUT, else ./gpu_check_report). Runs from source under whatever torch is installed:
#   bash scripts/gpu_check.sh [--out DIR] [--quick] [--only STEP ...] [--skip STEP ...] [--budget SECONDS]
# Without CUDA the CUDA-only steps are reported as skipped (see scripts/gpu_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3)}"
[ -x .venv/bin/python ] && [ -z "${PYTHON_FROM_ENV:-}" ] && ! "$PYTHON" -c "import torch" 2>/dev/null && PYTHON=.venv/bin/python
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" scripts/gpu_check.py "$@"
