#!/usr/bin/env bash
# Compare TensorRT with ONNX Runtime on one exported model, with polygraphy.
#
#   engines/polygraphy_compare.sh MODEL.onnx [TOKENS]
#   DRY_RUN=1 engines/polygraphy_compare.sh MODEL.onnx    print the commands only
#
# Runs `polygraphy inspect model` (the graph as ONNX sees it: inputs, outputs,
# the mhc.* nodes and their attributes) and then `polygraphy run --trt
# --onnxrt`, which builds an engine with the decode and prefill profiles, feeds
# both backends the same random inputs at TOKENS tokens (default 8) and
# compares every output. Environment: MHC_PLUGIN_LIB (plugin library), ATOL,
# RTOL (default 1e-3 / 1e-3: float32 models; use 2e-2 for bf16, matching
# mhc_export.validation.report's tolerances), DECODE_MAX_TOKENS (16), PREFILL_MAX_TOKENS (4096),
# PYTHON (python3: the interpreter with TensorRT, polygraphy and this package).
# Needs polygraphy (pip install polygraphy) and, for --trt, full TensorRT.
#
# Plugins: polygraphy's --plugins only dlopens the library (ctypes.CDLL in its
# LoadPlugins loader), and it does so before its lazy `import tensorrt` has run.
# Our library registers its creators with the TensorRT loaded in the process
# when it is loaded, so TensorRT must be imported first: this script runs
# polygraphy through `python3 -c 'import tensorrt; ... polygraphy main'`. A bare
# `polygraphy run --plugins LIB` can find no TensorRT to register with, and the
# parser then silently imports the local functions. Before comparing, with a
# library, `mhc-export check MODEL --plugins LIB --load dlopen` parses the model
# the way polygraphy will and fails when an mhc op has no plugin layer.
set -euo pipefail

onnx="${1:?usage: polygraphy_compare.sh MODEL.onnx [TOKENS]}"
tokens="${2:-8}"
# shellcheck source=engines/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
atol="${ATOL:-1e-3}"
rtol="${RTOL:-1e-3}"

if [[ -z "${DRY_RUN:-}" ]] && ! command -v polygraphy >/dev/null; then
  echo "polygraphy_compare.sh: polygraphy not found; pip install polygraphy" >&2
  exit 3
fi
if [[ -z "${DRY_RUN:-}" ]] && ! "${PYTHON:-python3}" -c 'import tensorrt; tensorrt.Builder' 2>/dev/null; then
  echo "polygraphy_compare.sh: polygraphy --trt needs full TensorRT ('import tensorrt'" \
       "with a Builder); none is installed here. TensorRT-RTX is not supported by" \
       "polygraphy; use 'mhc-export validate --engine' instead." >&2
  exit 3
fi

plugin="${MHC_PLUGIN_LIB:-}"
if [[ -z "$plugin" && -d "$root/build" ]]; then
  major="$("${PYTHON:-python3}" -c 'import tensorrt; print(tensorrt.__version__.split(".")[0])' 2>/dev/null || echo 11)"
  lib="$root/build/plugins-trt$major/libmhc_trt_plugins_trt$major.so"
  [[ -f "$lib" ]] && plugin="$lib"
fi
plugin_flags=()
[[ -n "$plugin" ]] && plugin_flags=(--plugins "$plugin")

# polygraphy with TensorRT imported first (see the header).
polygraphy_trt() {
  run env PYTHONPATH="$pypath" "${PYTHON:-python3}" -c \
    'import sys, tensorrt; from polygraphy import tools; sys.argv[0] = "polygraphy"; sys.exit(tools.main())' "$@"
}

check "$onnx"
if [[ -n "$plugin" ]]; then
  check "$onnx" --plugins "$plugin" --load dlopen
fi

# Shapes for the two profiles and the comparison run, from the model's inputs:
# full model: tokens [batch, seq]; single ops: every per-token input [T, ...].
read -r min1 opt1 max1 min2 opt2 max2 run_shapes < <("${PYTHON:-python3}" - "$onnx" "$tokens" "$decode_max" "$prefill_max" <<'EOF'
import sys, onnx
path, t, dmax, pmax = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
m = onnx.load(path, load_external_data=False)
inits = {i.name for i in m.graph.initializer}
def shp(fn):
    parts = []
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.dim_value > 0 else None for d in vi.type.tensor_type.shape.dim]
        if None not in dims:
            continue
        parts.append(f"{vi.name}:[{','.join(str(v) for v in fn(dims))}]")
    return " ".join(parts) or "-"
def full(b, s):  # [batch, seq]
    return lambda dims: [b if i == 0 else s if v is None else v for i, v in enumerate(dims)]
def tok(n):
    return lambda dims: [n if v is None else v for v in dims]
two = any(sum(d.dim_value <= 0 for d in vi.type.tensor_type.shape.dim) == 2
          for vi in m.graph.input if vi.name not in inits)
if two:
    rows = [full(1, 1), full(dmax, 1), full(dmax, 1), full(1, 1), full(1, pmax), full(1, pmax),
            full(1, t)]
else:
    rows = [tok(1), tok(dmax), tok(dmax), tok(1), tok(pmax), tok(pmax), tok(t)]
print(" ".join(shp(r).replace(" ", ";") for r in rows))
EOF
)
split() { tr ';' ' ' <<<"$1"; }

run polygraphy inspect model "$onnx" --show layers attrs

# Two --trt-*-shapes groups = two optimization profiles (decode, prefill).
# shellcheck disable=SC2046
polygraphy_trt run "$onnx" --trt --onnxrt "${plugin_flags[@]}" \
  --trt-min-shapes $(split "$min1") --trt-opt-shapes $(split "$opt1") --trt-max-shapes $(split "$max1") \
  --trt-min-shapes $(split "$min2") --trt-opt-shapes $(split "$opt2") --trt-max-shapes $(split "$max2") \
  --input-shapes $(split "$run_shapes") \
  --atol "$atol" --rtol "$rtol"
