#!/usr/bin/env bash
# The test command (README, .ci/run): set up, build the C++/CUDA libraries,
# lint, run the whole test suite. GPU and TensorRT tests skip with the reason
# where there is no GPU or TensorRT; scripts/gpu/run.sh gate runs them on a GPU.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
bash scripts/dev/build_plugins_ci.sh
# The CI build puts the kernel library under build/plugins-trt11.
export MHC_KERNELS_LIB=${MHC_KERNELS_LIB:-$root/build/plugins-trt11/kernels/libmhc_kernels.so}
# The builds just ran: a missing artifact is a failure here, not a skip.
export MHC_REQUIRE_PLUGIN_BUILDS=1
.venv/bin/ruff check mhc_export export_scripts tests benchmarks scripts
.venv/bin/python -m pytest -q "$@"
