#!/usr/bin/env bash
# One device call: build the kernels for sm_90, run the GPU tests, run the
# benchmark. Logs and JSON land in $OUT (or ./out/gpu_kernels without it).
#   scripts/gpu_kernels.sh [extra bench args...]
# With FlashInfer's bundle in .peers/flashinfer (benchmarks/peers/flashinfer_mhc.py
# says how to make it; the device call carries [".peers"]) the peer's GPU test
# runs too and the benchmark's pre and post rows get FlashInfer columns; a
# bundle that is there but does not load fails the run (after the table).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# Fewest GPU tests these files may collect (raise it when adding GPU tests).
MIN_GPU_TESTS=352
out=${OUT:-$root/out/gpu_kernels}
mkdir -p "$out"
cd "$root"
export PYTHONUNBUFFERED=1 PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
{
  date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv
  python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
} 2>&1 | tee "$out/env.txt"

MHC_CUDA_ARCHS=${MHC_CUDA_ARCHS:-90} scripts/build_plugins.sh "$root/build/plugins-trt11" \
  -DMHC_BUILD_TRT_PLUGINS=OFF -DMHC_PTXAS_VERBOSE=ON 2>&1 > "$out/build.txt" \
  || { tail -50 "$out/build.txt"; echo "BUILD FAILED"; exit 1; }
echo "build ok"

rc=0
# A missing kernel library or CUDA device fails here instead of skipping; every
# GPU test of these files must run and pass (scripts/junit_gate.py).
export MHC_REQUIRE_PLUGIN_BUILDS=1 MHC_REQUIRE_GPU=1
export MHC_KERNELS_LIB=${MHC_KERNELS_LIB:-$root/build/plugins-trt11/kernels/libmhc_kernels.so}
tests=(tests/test_kernels.py tests/test_kernels_attributes.py tests/test_kernels_lib.py)
peer=$( [ -d "$root/.peers/flashinfer/site/flashinfer" ] || [ -n "${MHC_FLASHINFER_BUNDLE:-}" ] && echo 1 )
marks=gpu
[ -n "$peer" ] && tests+=(tests/test_peer_flashinfer.py) && marks="gpu or peer"
python3 -m pytest --collect-only -q -p no:cacheprovider -m "$marks" "${tests[@]}" 2>&1 \
  | grep '::' > "$out/gpu_tests.txt" || true
timeout ${TEST_TIMEOUT:-300} python3 -m pytest -q -p no:cacheprovider -rs "${tests[@]}" \
  --junitxml="$out/tests.xml" 2>&1 | tee "$out/tests.txt" | tail -25
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
python3 scripts/junit_gate.py "$out/tests.xml" --expect "$out/gpu_tests.txt" \
  --min "${MHC_MIN_GPU_TESTS:-$MIN_GPU_TESTS}" 2>&1 | tee "$out/gate.txt" | tail -25
[ "${PIPESTATUS[0]}" = 0 ] || rc=1

timeout ${BENCH_TIMEOUT:-360} python3 benchmarks/bench_kernels.py --json "$out/bench_kernels.json" \
  "$@" 2>&1 | tee "$out/bench.txt" | tail -80
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
if [ -n "$peer" ] && grep -q '^peer: unavailable' "$out/bench.txt"; then
  echo "PEER NOT TIMED: $(grep '^peer:' "$out/bench.txt")"; rc=1
fi
exit $rc
