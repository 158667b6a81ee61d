#!/usr/bin/env bash
# Build the CUDA kernel library and the TensorRT plugin library with CMake.
#   scripts/build_plugins.sh [BUILD_DIR] [extra cmake -D args...]
# TENSORRT_ROOT picks the TensorRT headers (default: the 11.1 headers in
# ../shared/third_party); MHC_CUDA_ARCHS the GPU targets (default 80;90;100).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build/plugins}
shift || true
trt_root=${TENSORRT_ROOT:-$root/../shared/third_party/tensorrt-11.1}
archs=${MHC_CUDA_ARCHS:-80;90;100}
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$root/plugins" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DTENSORRT_ROOT="$trt_root" "-DCMAKE_CUDA_ARCHITECTURES=$archs" "$@"
cmake --build "$build" -j "$(nproc)"
