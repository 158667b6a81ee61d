#!/usr/bin/env bash
# GPU machine: build the kernels and plugin library (sm_90, TensorRT 11.1 headers from
# .trt_headers), then fuzz the CUDA kernels and the plugin harness against the float64
# reference (scripts/fuzz.py --gpu). Logs and JSON in $OUT.
#   here:        scripts/gpu_all.sh prepare        (copies the headers into .trt_headers/)
#   GPU machine: scripts/gpu_fuzz.sh [COUNT] [SEED] (device tool: carry [".trt_headers"])
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-$root/out/gpu_fuzz}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
if [ ! -f build/plugins-trt11/libmhc_trt_plugins_trt11.so ]; then
  TENSORRT_ROOT=$root/.trt_headers/tensorrt-11.1 MHC_CUDA_ARCHS=${MHC_CUDA_ARCHS:-90} \
    scripts/build_plugins.sh > "$out/build.txt" 2>&1 || { tail -30 "$out/build.txt"; exit 1; }
fi
export MHC_KERNELS_LIB=$root/build/plugins-trt11/kernels/libmhc_kernels.so
python3 scripts/fuzz.py --gpu --only kernels,plugin --count "${1:-1000}" --seed "${2:-7}" \
  --harness-every "${HARNESS_EVERY:-4}" --json "$out/fuzz_gpu.json" 2>&1 | tee "$out/fuzz_gpu.txt"
exit "${PIPESTATUS[0]}"
