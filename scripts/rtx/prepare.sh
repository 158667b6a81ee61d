#!/usr/bin/env bash
# Run HERE (not on the GPU machine): everything the TensorRT-RTX check needs,
# in git-ignored folders:
#   .trt_rtx/       the two wheels, TensorRT-RTX packed as rtx.tar.xz (kept here, never carried)
#   .rtx_run/bin/   libmhc_trt_plugins_trt11.so + mhc_plugin_harness built here (x86-64)
#   .rtx_run/onnx/  the exported ONNX models (exporting here is cheaper than on the device)
#   .rtx_part1/, .rtx_part2/  all of it as one archive in two halves (scripts/rtx/bundle.sh)
# Then make two back-to-back device calls (see docs/TENSORRT.md):
#   1. carry .rtx_part1   command: bash scripts/rtx/device_step1.sh
#   2. carry .rtx_part2   command: bash scripts/rtx/device_step2.sh
# scripts/rtx/rtx_check.sh also runs HERE, without a GPU: MHC_TRT_RTX_DIR=.trt_rtx/pkg
# MHC_RTX_TARGETS=SM89 (Python 3.12, which the TensorRT-RTX bindings need).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
ver=1.7.1.116
py=${PYTHON:-python3}
[ -f .venv/bin/activate ] && source .venv/bin/activate && py=python

# Keep the carried folders out of git without touching .gitignore (the lead's).
exclude="$(git rev-parse --git-common-dir)/info/exclude"  # a worktree's .git is a file
mkdir -p "$(dirname "$exclude")"
for d in /.rtx_part1/ /.rtx_part2/ /.rtx_run/ /.trt_rtx/; do
  grep -qxF "$d" "$exclude" 2>/dev/null || echo "$d" >> "$exclude"
done

# 1. TensorRT-RTX wheels -> one tar.xz -> two parts.
mkdir -p .trt_rtx/wheels
if ! ls .trt_rtx/wheels/tensorrt_rtx_cu13_libs-*.whl >/dev/null 2>&1 \
   || ! ls .trt_rtx/wheels/tensorrt_rtx_cu13_bindings-*.whl >/dev/null 2>&1; then
  "$py" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 -d .trt_rtx/wheels \
    "tensorrt-rtx-cu13-libs==$ver" "tensorrt-rtx-cu13-bindings==$ver"
fi
if [ ! -f .trt_rtx/rtx.tar.xz ]; then
  rm -rf .trt_rtx/pkg && mkdir -p .trt_rtx/pkg
  for w in .trt_rtx/wheels/*.whl; do (cd .trt_rtx/pkg && unzip -q -o "../../$w"); done
  ls -d .trt_rtx/pkg/tensorrt_rtx_libs .trt_rtx/pkg/tensorrt_rtx_bindings
  tar -C .trt_rtx/pkg -cJf .trt_rtx/rtx.tar.xz tensorrt_rtx_libs tensorrt_rtx_bindings
fi
# 2. Plugin library and harness, built here against the TensorRT 11.1 headers.
build=${MHC_RTX_PLUGIN_BUILD:-$root/build/plugins-trt11}
if [ ! -f "$build/libmhc_trt_plugins_trt11.so" ] || [ ! -f "$build/mhc_plugin_harness" ]; then
  PATH=$PATH:/usr/local/cuda/bin TENSORRT_ROOT="$root/../shared/third_party/tensorrt-11.1" \
    scripts/dev/build_plugins.sh "$build"
fi
rm -rf .rtx_run && mkdir -p .rtx_run/bin .rtx_run/onnx
cp "$build/libmhc_trt_plugins_trt11.so" "$build/mhc_plugin_harness" .rtx_run/bin/
strip --strip-unneeded .rtx_run/bin/* 2>/dev/null || true

# 3. ONNX: every kind of model the exporter makes (docs/TENSORRT.md's support table):
# each single op in bf16 (n=4, d=256), MhcPre in float32 with default and with odd
# attributes, the tiny and small models fused (default) and plain (--no-fuse), and a
# tiny random HF DeepSeek-V4 checkpoint exported with --hf.
n=${MHC_RTX_STREAMS:-4}; d=${MHC_RTX_HIDDEN:-256}
export_one() {  # NAME ARGS...: export_scripts/export.py ARGS -> .rtx_run/onnx/NAME.onnx
  local name=$1; shift
  "$py" export_scripts/export.py "$@" --no-validate --out ".rtx_run/onnx/$name.onnx" \
    > ".trt_rtx/$name.export.log" 2>&1 || { tail -20 ".trt_rtx/$name.export.log"; exit 1; }
}
for op in pre post head post_pre post_head; do
  export_one "${op}_bf16" --op "$op" --streams "$n" --hidden "$d" --dtype bfloat16
done
export_one sinkhorn_fp32 --op sinkhorn --streams "$n"  # logits are float32 whatever the model
export_one pre_fp32 --op pre --streams "$n" --hidden "$d" --dtype float32
# Attributes far from the defaults: the parsed network must hold them as constants
# (Loop trip count iters-1 = 6, sinkhorn eps 0.01), not 0 / 0.0 (issue 12.1).
export_one pre_attrs_fp32 --op pre --streams "$n" --hidden "$d" --dtype float32 \
  --attr sinkhorn_iters=7 --attr sinkhorn_eps=0.01 --attr pre_eps=0.05 --attr rms_eps=0.1
for config in tiny small; do
  export_one "$config" --config "$config"
  export_one "${config}_plain" --config "$config" --no-fuse
done
export_one tiny_bf16 --config tiny --dtype bfloat16
"$py" -c "import sys; from mhc_export.adapters.hf_testing import make_config, save_random_checkpoint
save_random_checkpoint(sys.argv[1], make_config(), seed=21)" .trt_rtx/hf_tiny_checkpoint
export_one hf_tiny --hf .trt_rtx/hf_tiny_checkpoint
rm -f .rtx_run/onnx/*.report.json

ls -la .rtx_run/bin .rtx_run/onnx
bash scripts/rtx/bundle.sh
