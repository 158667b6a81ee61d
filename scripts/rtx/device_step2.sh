#!/usr/bin/env bash
# GPU machine, call 2 of 2 (carry .rtx_part2 .rtx_run): join and unpack
# TensorRT-RTX into /tmp/trt_rtx, then run, in this one call:
#   1. the plugin harness tests (tests/test_plugin_harness.py) on the GPU,
#   2. the TensorRT-RTX check (scripts/rtx_check.sh),
#   3. pytest -m trt tests (the engine builder/runtime tests) with TensorRT-RTX.
# Logs land in $OUT (log.txt, harness_pytest.txt, trt_pytest.txt, rtx_check.*).
set -uo pipefail
out=${OUT:-/tmp/rtx_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if [ ! -f /tmp/rtx_parts/rtx.tar.xz.part1 ]; then
  echo "part 1 missing in /tmp/rtx_parts: the machine was not warm; run device_step1.sh again first"
  exit 3
fi
cat /tmp/rtx_parts/rtx.tar.xz.part1 .rtx_part2/rtx.tar.xz.part2 > /tmp/rtx.tar.xz
if [ "$(sha256sum /tmp/rtx.tar.xz | cut -d' ' -f1)" != "$(cat .rtx_part2/rtx.tar.xz.sha256)" ]; then
  echo "joined archive has the wrong sha256"; exit 3
fi
rm -rf /tmp/trt_rtx && mkdir -p /tmp/trt_rtx && tar -C /tmp/trt_rtx -xJf /tmp/rtx.tar.xz
export MHC_TRT_RTX_DIR=/tmp/trt_rtx MHC_TENSORRT=tensorrt-rtx
export MHC_PLUGIN_BUILD_DIR=$PWD/.rtx_run/bin MHC_PLUGIN_LIB=$PWD/.rtx_run/bin/libmhc_trt_plugins_trt11.so
chmod +x .rtx_run/bin/mhc_plugin_harness
date -u; nvidia-smi -L; python3 --version; ls /tmp/trt_rtx/tensorrt_rtx_libs | head

echo "==== 1. plugin harness and kernel tests (libraries built here for sm_90)"
export MHC_KERNELS_LIB=/tmp/rtx_parts/libmhc_kernels.so
timeout 300 python3 -m pytest -q -rs tests/test_plugin_harness.py tests/test_kernels.py \
  --junitxml="$out/gpu_tests.xml" 2>&1 | tee "$out/harness_pytest.txt" | tail -30
echo "harness+kernels pytest exit: ${PIPESTATUS[0]}"

echo "==== 2. TensorRT-RTX check"
timeout 220 bash scripts/rtx_check.sh --out "$out" --timeout 100 2>&1 | tail -40
echo "rtx_check exit: ${PIPESTATUS[0]}"

echo "==== 3. pytest -m trt tests (TensorRT-RTX)"
timeout 150 python3 -m pytest -v -rs -m trt tests 2>&1 | tee "$out/trt_pytest.txt" | tail -40
echo "trt pytest exit: ${PIPESTATUS[0]}"
grep -E "passed|failed|error" "$out/harness_pytest.txt" | tail -1
grep -E "passed|failed|error" "$out/trt_pytest.txt" | tail -1
