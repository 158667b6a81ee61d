#!/usr/bin/env bash
# Run HERE after scripts/rtx/prepare.sh: TensorRT-RTX (.trt_rtx/rtx.tar.xz) and
# .rtx_run (plugin library, harness, models) as one archive, split in two halves
# for two device calls (a call carries 64 MiB at most):
#   .rtx_part1/bundle.part1   .rtx_part2/bundle.part2 + bundle.sha256
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
[ -f .trt_rtx/rtx.tar.xz ] && [ -d .rtx_run/onnx ] || { echo "run scripts/rtx/prepare.sh first" >&2; exit 2; }
XZ_OPT=${XZ_OPT:--6 -T0} tar -cJf .trt_rtx/rtx_run.tar.xz .rtx_run
tar -C .trt_rtx -cf .trt_rtx/bundle.tar rtx.tar.xz rtx_run.tar.xz
rm -rf .rtx_part1 .rtx_part2 && mkdir -p .rtx_part1 .rtx_part2
size=$(stat -c %s .trt_rtx/bundle.tar)
half=$(( (size + 1) / 2 ))
head -c "$half" .trt_rtx/bundle.tar > .rtx_part1/bundle.part1
tail -c +"$((half + 1))" .trt_rtx/bundle.tar > .rtx_part2/bundle.part2
sha256sum .trt_rtx/bundle.tar | cut -d' ' -f1 > .rtx_part2/bundle.sha256
ls -la .rtx_part1 .rtx_part2
