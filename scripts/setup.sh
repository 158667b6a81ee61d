#!/usr/bin/env bash
# Create .venv and install mhc-export with its test tools, from scratch.
#   scripts/setup.sh
# MHC_TORCH picks the torch requirement (default torch==2.13.0: on this
# project's machines the CPU wheel of that release is on local disk, while an
# unpinned torch pulls a multi-GB CUDA build; set MHC_TORCH=torch for that).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${MHC_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev,hf]"
echo "setup: $(.venv/bin/python -c 'import torch, onnx, onnxruntime as o; import transformers as t; print("torch", torch.__version__, "| onnx", onnx.__version__, "| onnxruntime", o.__version__, "| transformers", t.__version__)')"
