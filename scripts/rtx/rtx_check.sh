#!/usr/bin/env bash
# The TensorRT-RTX check (docs/TENSORRT.md), on a machine with TensorRT-RTX
# unpacked at MHC_TRT_RTX_DIR (scripts/rtx/ gets it onto the GPU machine):
#   scripts/rtx/rtx_check.sh [--plugins LIB] [--onnx-dir DIR] [--out DIR]
# Defaults: the library and models that scripts/rtx/prepare.sh puts in .rtx_run/.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
: "${MHC_TRT_RTX_DIR:?set MHC_TRT_RTX_DIR to the folder holding tensorrt_rtx_libs/ and tensorrt_rtx_bindings/}"
py=python3
command -v "$py" >/dev/null || py=python
exec env PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$py" "$root/scripts/rtx/rtx_check.py" \
  --plugins "${MHC_PLUGIN_LIB:-$root/.rtx_run/bin/libmhc_trt_plugins_trt11.so}" --onnx-dir "$root/.rtx_run/onnx" "$@"
