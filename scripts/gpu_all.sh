#!/usr/bin/env bash
# The whole test suite on the GPU machine, GPU tests included: builds the
# kernels and the plugin library (both TensorRT header versions) for sm_90,
# then runs pytest with the builds required. Logs and JUnit XML go to $OUT.
#
#   here:        scripts/gpu_all.sh prepare     # copies the TensorRT headers into .trt_headers/
#   GPU machine: scripts/gpu_all.sh             # (device tool: carry [".trt_headers"])
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ "${1:-}" = prepare ]; then
  mkdir -p .trt_headers
  grep -qx '/.trt_headers/' .git/info/exclude 2>/dev/null || echo '/.trt_headers/' >> .git/info/exclude
  for v in 10.16 11.1; do
    rm -rf ".trt_headers/tensorrt-$v"
    cp -r "$root/../shared/third_party/tensorrt-$v" ".trt_headers/tensorrt-$v"
  done
  # transformers as pinned here, and the huggingface-hub line it requires (the
  # GPU machine has 5.17 with huggingface-hub 1.x): carried as wheels.
  mkdir -p .wheels
  grep -qx '/.wheels/' .git/info/exclude 2>/dev/null || echo '/.wheels/' >> .git/info/exclude
  for pkg in transformers huggingface_hub httpx2 httpcore2 truststore click hf-xet; do
    ver=$(.venv/bin/python -m pip show "$pkg" 2>/dev/null | sed -n 's/^Version: //p')
    [ -n "$ver" ] && .venv/bin/python -m pip download -q --no-deps --only-binary=:all: \
      --platform manylinux_2_17_x86_64 --python-version 3.12 -d .wheels "$pkg==$ver"
  done
  du -sh .trt_headers .wheels
  exit 0
fi
# Fewest GPU tests the whole suite may collect (raise it when adding GPU tests).
MIN_GPU_TESTS=392
out=${OUT:-$root/out/gpu_all}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
# The GPU machine's transformers predates DeepSeek-V4: a carried wheel of the
# pinned version and its hub dependencies (.wheels/, made by `prepare`) go
# first on the path.
if ls "$root"/.wheels/transformers-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-deps --target /tmp/site "$root"/.wheels/*.whl \
    > "$out/pip.txt" 2>&1 || { tail -5 "$out/pip.txt"; echo "PIP FAILED"; exit 1; }
  export PYTHONPATH=/tmp/site:$PYTHONPATH
  # Stop before the build if the carried set does not import (a missing dependency).
  python3 -c 'import transformers.models.deepseek_v4' 2>&1 | tail -1 | tee "$out/transformers.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "CARRIED TRANSFORMERS DOES NOT IMPORT"; exit 1; }
fi
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c 'import torch, onnx, onnxruntime as o, transformers as t; print("torch", torch.__version__, "onnx", onnx.__version__, "onnxruntime", o.__version__, "transformers", t.__version__)'
} 2>&1 | tee "$out/env.txt"
MHC_TRT_HEADERS=$root/.trt_headers MHC_CUDA_ARCHS=${MHC_CUDA_ARCHS:-90} \
  bash scripts/build_plugins_ci.sh > "$out/build.txt" 2>&1 \
  || { tail -40 "$out/build.txt"; echo "BUILD FAILED"; exit 1; }
tail -1 "$out/build.txt"
export MHC_KERNELS_LIB=$root/build/plugins-trt11/kernels/libmhc_kernels.so
# A missing build or CUDA device fails the GPU tests here instead of skipping them.
export MHC_REQUIRE_PLUGIN_BUILDS=1 MHC_REQUIRE_GPU=1 MHC_TRT_HEADERS=$root/.trt_headers
# The GPU tests (marker gpu) that must all run and pass; the floor catches a
# module that stopped collecting (tests/builds.py, docs/TESTING.md).
python3 -m pytest --collect-only -q -p no:cacheprovider -m gpu "$@" 2>&1 \
  | grep '::' > "$out/gpu_tests.txt" || true
timeout ${TEST_TIMEOUT:-480} python3 -m pytest -q -p no:cacheprovider -rs \
  --junitxml="$out/tests.xml" "$@" 2>&1 | tee "$out/tests.txt" | tail -45
rc=${PIPESTATUS[0]}
python3 scripts/junit_gate.py "$out/tests.xml" --expect "$out/gpu_tests.txt" \
  --min "${MHC_MIN_GPU_TESTS:-$MIN_GPU_TESTS}" 2>&1 | tee "$out/gate.txt" | tail -25
gate=${PIPESTATUS[0]}
[ "$rc" = 0 ] && [ "$gate" = 0 ]
