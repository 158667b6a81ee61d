#!/usr/bin/env bash
# One device call for issue 9: install the carried transformers wheel, build the
# kernel library (sm_90), run the HF GPU test, run the HF layers benchmark.
#   scripts/gpu_hf.sh [extra bench args...]
# Needs .wheels/transformers-5.23.0-py3-none-any.whl in the tree (pip download
# --no-deps transformers==5.23.0 -d .wheels). Logs and JSON land in $OUT.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/out/gpu_hf}
mkdir -p "$out"
cd "$root"
t0=$(date +%s)
python3 -m pip install -q --no-deps --target /tmp/site "$root"/.wheels/transformers-*.whl \
  > "$out/pip.txt" 2>&1 || { tail -5 "$out/pip.txt"; echo "PIP FAILED"; exit 1; }
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$root
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name())' 2>&1 | tee "$out/env.txt"
MHC_CUDA_ARCHS=${MHC_CUDA_ARCHS:-90} scripts/build_plugins.sh "$root/build/plugins-trt11" \
  -DMHC_BUILD_TRT_PLUGINS=OFF > "$out/build.txt" 2>&1 \
  || { tail -30 "$out/build.txt"; echo "BUILD FAILED"; exit 1; }
export MHC_KERNELS_LIB=$root/build/plugins-trt11/kernels/libmhc_kernels.so
echo "build ok after $(( $(date +%s) - t0 ))s"
rc=0
timeout ${TEST_TIMEOUT:-120} python3 -m pytest -q -s -p no:cacheprovider tests/test_hf_gpu.py \
  2>&1 | tee "$out/tests.txt" | tail -15
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
timeout ${BENCH_TIMEOUT:-200} python3 benchmarks/bench_hf_layers.py --json "$out/bench_hf.json" \
  "$@" 2>&1 | tee "$out/bench.txt" | tail -30
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
echo "total $(( $(date +%s) - t0 ))s"
exit $rc
