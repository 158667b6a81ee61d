#!/usr/bin/env bash
# CI build of the TensorRT plugin library against BOTH TensorRT header
# versions, plus the compile-only check of the C++ example.
#   scripts/dev/build_plugins_ci.sh [OUT_ROOT]        (default: build/)
# Produces:
#   OUT_ROOT/plugins-trt11/   full build, TensorRT 11.1 headers, archs MHC_CUDA_ARCHS (default 80;90;100)
#   OUT_ROOT/plugins-trt10/   plugin library + harness only, TensorRT 10.16 headers, one arch
#                             (MHC_CI_TRT10_ARCHS, default 90: the header version does not touch the kernels)
#   OUT_ROOT/example-cpp-trt11/, example-cpp-trt10/   examples/cpp compiled to objects, no link
# tests/test_plugin_lib.py checks all of these. MHC_TRT_HEADERS (default
# ../shared/third_party) holds tensorrt-10.16/ and tensorrt-11.1/.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/build}
headers=${MHC_TRT_HEADERS:-$root/../shared/third_party}
for v in 10.16 11.1; do
  if [ ! -f "$headers/tensorrt-$v/include/NvInferVersion.h" ]; then
    echo "build_plugins_ci: TensorRT $v headers missing: $headers/tensorrt-$v/include (the tests need" \
         "../shared/third_party beside the checkout, or MHC_TRT_HEADERS naming a folder with" \
         "tensorrt-10.16/ and tensorrt-11.1/)" >&2
    exit 2
  fi
done
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
t0=$(date +%s)

echo "== plugins against TensorRT 11.1 headers -> $out/plugins-trt11"
TENSORRT_ROOT="$headers/tensorrt-11.1" "$root/scripts/dev/build_plugins.sh" "$out/plugins-trt11"
t1=$(date +%s)

echo "== plugins against TensorRT 10.16 headers -> $out/plugins-trt10"
cmake -S "$root/native" -B "$out/plugins-trt10" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DTENSORRT_ROOT="$headers/tensorrt-10.16" "-DCMAKE_CUDA_ARCHITECTURES=${MHC_CI_TRT10_ARCHS:-90}"
cmake --build "$out/plugins-trt10" -j "$(nproc)" --target mhc_trt_plugins mhc_plugin_harness
t2=$(date +%s)

for v in 11.1 10.16; do
  tag=trt${v%%.*}
  echo "== examples/cpp compiled against TensorRT $v headers (no libnvinfer link) -> $out/example-cpp-$tag"
  cmake -S "$root/examples/cpp" -B "$out/example-cpp-$tag" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DMHC_EXAMPLE_HEADERS_ONLY=ON -DTENSORRT_ROOT="$headers/tensorrt-$v"
  cmake --build "$out/example-cpp-$tag" -j "$(nproc)"
done
t3=$(date +%s)
echo "build_plugins_ci: trt11 $((t1 - t0)) s, trt10 $((t2 - t1)) s, example $((t3 - t2)) s, total $((t3 - t0)) s"
