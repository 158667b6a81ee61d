#!/usr/bin/env bash
# TensorRT-RTX parse + build of HF DeepSeek-V4 exports with the checkpoint's own
# weight precision (--weights native: FP8 initializers with UE8M0 block scales,
# packed FP4 experts, decoded in the graph with standard ops) beside the same
# slices dequantized, and the V4.1 tiny model fused and plain. Runs here, without
# a GPU (ahead of time for SM89), or on the GPU machine:
#   MHC_TRT_RTX_DIR=<TensorRT-RTX unpacked> scripts/rtx/native_weights.sh [OUT]
# Needs the plugin library built (scripts/dev/build_plugins.sh) and a Python 3.12 with
# numpy and onnx for TensorRT-RTX's bindings (RTX_PYTHON, default python3.12;
# scripts/rtx/prepare.sh fetches the wheels). Its parent process imports
# mhc_export.core.spec, which imports torch: where that Python has no torch, put a stub
# package on PYTHONPATH (docs/journal/2026-12-06-issue21-tensorrt.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/out/rtx_native}
: "${MHC_TRT_RTX_DIR:?set MHC_TRT_RTX_DIR to the folder holding tensorrt_rtx_libs/ and tensorrt_rtx_bindings/}"
py=${PYTHON:-$root/.venv/bin/python}
rm -rf "$out" && mkdir -p "$out/onnx"
ckpt=$out/checkpoint
"$py" -m mhc_export.testing.v4_checkpoints "$ckpt" --layout native --weights fp8 --experts fp4 --shards 3
export_hf() {  # name, args...
  local name=$1; shift
  "$py" -m mhc_export export --hf "$ckpt" "$@" --out "$out/onnx/$name.onnx" > "$out/$name.export.log" 2>&1 \
    || { tail -5 "$out/$name.export.log"; exit 1; }
  grep -E "RESULT|PASS|FAIL" "$out/$name.export.log" | tail -2
}
export_hf hf_native_layers1-3 --layers 1:3 --weights native
export_hf hf_native_full --weights native
export_hf hf_dequant_layers1-3 --layers 1:3
for fuse in "" --no-fuse; do
  "$py" -m mhc_export export --config tiny-v41 --dtype bfloat16 --no-validate $fuse \
    --out "$out/onnx/tiny_v41_bf16${fuse:+_plain}.onnx" > /dev/null
done
MHC_RTX_TARGETS=${MHC_RTX_TARGETS:-SM89} PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} "${RTX_PYTHON:-python3.12}" "$root/scripts/rtx/rtx_check.py" \
  --plugins "${MHC_PLUGIN_LIB:-$root/build/plugins-trt11/libmhc_trt_plugins_trt11.so}" \
  --onnx-dir "$out/onnx" --out "$out"
