#!/usr/bin/env bash
# Create .venv (once) and install srnas with its dependencies.
# torch is pinned to the local CPU wheel first, so pip never pulls a multi-GB CUDA build;
# on a GPU machine install your CUDA torch into the venv first and this script keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/pip install -q "torch==${SRNAS_TORCH_VERSION:-2.13.0}"
fi
.venv/bin/pip install -q -e ".[test]"
