#!/usr/bin/env bash
# Build the CUDA kernel library and the TensorRT plugin library with CMake.
#   scripts/dev/build_plugins.sh [BUILD_DIR] [extra cmake -D args...]
# TENSORRT_ROOT picks the TensorRT headers (default: the 11.1 headers in
# ../shared/third_party); MHC_CUDA_ARCHS the GPU targets (default 80;90;100).
# BUILD_DIR defaults to build/plugins-trt<major of those headers>: the one
# layout the Python binding, the engine builder and the tests look in
# (mhc_export/core/build_layout.py). It then holds kernels/libmhc_kernels.so,
# libmhc_trt_plugins_trt<major>.so and mhc_plugin_harness.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
trt_root=${TENSORRT_ROOT:-$root/../shared/third_party/tensorrt-11.1}
if [ -f "$trt_root/include/NvInferVersion.h" ]; then
  major=$(sed -n 's/^#define \(TRT_MAJOR_ENTERPRISE\|NV_TENSORRT_MAJOR\) *\([0-9]*\).*/\2/p' \
    "$trt_root/include/NvInferVersion.h" | head -n1)
elif [ -z "${1:-}" ]; then
  echo "build_plugins: no TensorRT headers at $trt_root/include. Set TENSORRT_ROOT to a TensorRT" \
       "install or header tree (this repo's tests use ../shared/third_party/tensorrt-11.1 beside" \
       "the checkout), or name a BUILD_DIR and pass -DMHC_BUILD_TRT_PLUGINS=OFF for the kernels alone" >&2
  exit 2
fi
build=${1:-$root/build/plugins-trt$major}
shift || true
archs=${MHC_CUDA_ARCHS:-80;90;100}
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$root/native" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DTENSORRT_ROOT="$trt_root" "-DCMAKE_CUDA_ARCHITECTURES=$archs" "$@"
cmake --build "$build" -j "$(nproc)"
