#!/usr/bin/env bash
# GPU machine, call 2 of 2 (carry .rtx_part2): join the bundle, unpack TensorRT-RTX
# into /tmp/trt_rtx and .rtx_run (library, harness, models) here, then run:
#   1. the TensorRT-RTX check (scripts/rtx/rtx_check.sh): library loading by
#      load_library and by a bare dlopen, creators, logger, and a parse + build of
#      every exported model in .rtx_run/onnx with and without the plugin library,
#   2. pytest -m trt tests (the engine builder/runtime tests) with TensorRT-RTX.
# Logs land in $OUT (rtx_check.*, trt_pytest.txt).
set -uo pipefail
out=${OUT:-/tmp/rtx_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if [ ! -f /tmp/rtx_parts/bundle.part1 ]; then
  echo "part 1 missing in /tmp/rtx_parts: the machine was not warm; run device_step1.sh again first"
  exit 3
fi
cat /tmp/rtx_parts/bundle.part1 .rtx_part2/bundle.part2 > /tmp/rtx_bundle.tar
if [ "$(sha256sum /tmp/rtx_bundle.tar | cut -d' ' -f1)" != "$(cat .rtx_part2/bundle.sha256)" ]; then
  echo "joined bundle has the wrong sha256"; exit 3
fi
rm -rf /tmp/rtx_bundle /tmp/trt_rtx && mkdir -p /tmp/rtx_bundle /tmp/trt_rtx
tar -C /tmp/rtx_bundle -xf /tmp/rtx_bundle.tar
tar -C /tmp/trt_rtx -xJf /tmp/rtx_bundle/rtx.tar.xz &
tar -xJf /tmp/rtx_bundle/rtx_run.tar.xz
wait
export MHC_TRT_RTX_DIR=/tmp/trt_rtx MHC_TENSORRT=tensorrt-rtx
export MHC_PLUGIN_BUILD_DIR=$PWD/.rtx_run/bin MHC_PLUGIN_LIB=$PWD/.rtx_run/bin/libmhc_trt_plugins_trt11.so
date -u; nvidia-smi -L; python3 --version; ls /tmp/trt_rtx/tensorrt_rtx_libs | head

echo "==== 1. TensorRT-RTX check"
timeout 140 bash scripts/rtx/rtx_check.sh --out "$out" --timeout 120 --jobs 12 2>&1 | tail -60
echo "rtx_check exit: ${PIPESTATUS[0]}"

echo "==== 2. pytest -m trt tests (TensorRT-RTX)"
timeout 60 python3 -m pytest -q -rs -m trt tests 2>&1 | tee "$out/trt_pytest.txt" | tail -15
echo "trt pytest exit: ${PIPESTATUS[0]}"

