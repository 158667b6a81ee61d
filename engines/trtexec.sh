#!/usr/bin/env bash
# trtexec equivalents of `mhc-export build` for the exported models in this folder.
#
#   engines/trtexec.sh [MODEL_DIR]          build every model found (default: engines/)
#   DRY_RUN=1 engines/trtexec.sh            print the commands only (no trtexec needed)
#
# Environment:
#   TRT_MAJOR          TensorRT major of trtexec (10 or 11); default: read from trtexec's
#                      banner ("TensorRT v101600" -> 10), or 11 in a dry run without trtexec
#   MHC_PLUGIN_LIB     plugin library; default build/plugins-trt<major>/libmhc_trt_plugins_trt<major>.so
#                      (the library must match trtexec's major: TensorRT 10 and 11 hand
#                      plugins loggers of different layouts)
#   SERIALIZE_PLUGINS=1  embed the library in the plan: adds --versionCompatible and
#                      --setPluginsToSerialize (trtexec serializes plugin libraries only into
#                      version-compatible engines). Load such a plan with
#                      `trtexec --loadEngine=X.plan --versionCompatible` and WITHOUT
#                      --dynamicPlugins (the library is in the plan; loading it twice fails).
#                      Default: plain plans, loaded with --dynamicPlugins=<library>.
#   DECODE_MAX_TOKENS (16), PREFILL_MAX_TOKENS (4096), TRTEXEC (path to trtexec),
#   TIMING_CACHE (engines/timing.cache).
#
# Precision, as `mhc-export build`: strongly typed networks, which run in the
# ONNX's own types (export in bf16/fp16 to build in bf16/fp16). TensorRT 10 gets
# --stronglyTyped (its weakly typed --bf16 could give the plugins' fp32 variant
# with reformats around it); TensorRT 11 has no --bf16/--fp16 and makes every
# network strongly typed, so no precision flag is passed.
#
# Checks, with `python3 -m mhc_export` (this checkout on PYTHONPATH):
# * before building, `mhc-export check MODEL` (the mhc node contract; trtexec
#   itself drops a misspelled attribute silently);
# * with a plugin library, each build exports its layers
#   (--exportLayerInfo, --profilingVerbosity=detailed) and
#   `mhc-export check MODEL --layer-info X.layers.json` fails the script when an
#   mhc op has no plugin layer (its nodes were imported as local functions).
#   Plugin layers need TensorRT >= 10.7: older ONNX parsers always import an
#   mhc node as its local function, plugin library or not.
#
# Differences from `mhc-export build`, on purpose:
# * One engine per profile (X.decode.plan, X.prefill.plan). trtexec's help
#   documents one --minShapes/--optShapes/--maxShapes set per build; the
#   Python builder puts both profiles into a single plan instead.
# * No JSON sidecar: `mhc-export validate --engine` then needs --onnx.
# * trtexec only exists with full TensorRT (not TensorRT-RTX, not the PyPI
#   stubs); see shared/device/README.md for what is installable where.
set -euo pipefail

# shellcheck source=engines/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
model_dir="${1:-$here}"
timing_cache="${TIMING_CACHE:-$here/timing.cache}"
trtexec="${TRTEXEC:-$(command -v trtexec || true)}"

if [[ -z "${DRY_RUN:-}" && ( -z "$trtexec" || ! -x "$trtexec" ) ]]; then
  echo "trtexec.sh: trtexec not found (not on PATH and TRTEXEC unset). It ships with full" \
       "TensorRT (bin/trtexec of the tar/deb install), which is not installed here;" \
       "use 'mhc-export build' with TensorRT-RTX, or DRY_RUN=1 to print the commands." >&2
  exit 3
fi

major="${TRT_MAJOR:-}"
if [[ -z "$major" && -n "$trtexec" && -x "$trtexec" ]]; then
  banner="$("$trtexec" --help 2>&1 | grep -o 'TensorRT v[0-9]*' | head -n1 || true)"
  [[ -n "$banner" ]] && major=$(( ${banner#TensorRT v} / 10000 ))
fi
major="${major:-11}"
if [[ "$major" != 10 && "$major" != 11 ]]; then
  echo "trtexec.sh: TRT_MAJOR must be 10 or 11 (got '$major')" >&2
  exit 2
fi

plugin="${MHC_PLUGIN_LIB:-}"
default_plugin="$root/build/plugins-trt$major/libmhc_trt_plugins_trt$major.so"
if [[ -z "$plugin" && -f "$default_plugin" ]]; then
  plugin="$default_plugin"
fi
if [[ -n "$plugin" && "$(basename "$plugin")" =~ _trt([0-9]+)\.so$ && "${BASH_REMATCH[1]}" != "$major" ]]; then
  echo "trtexec.sh: $plugin was built for TensorRT ${BASH_REMATCH[1]} but trtexec is TensorRT" \
       "$major; use libmhc_trt_plugins_trt$major.so" >&2
  exit 2
fi
plugin_flags=()
if [[ -n "$plugin" ]]; then
  plugin_flags=(--dynamicPlugins="$plugin")
  if [[ -n "${SERIALIZE_PLUGINS:-}" ]]; then
    plugin_flags+=(--versionCompatible --setPluginsToSerialize="$plugin")
  fi
else
  echo "trtexec.sh: no plugin library (MHC_PLUGIN_LIB unset, no $default_plugin):" \
       "mHC nodes build from their ONNX local functions" >&2
fi

# Precision (see the header): strongly typed; the flag exists on TensorRT 10 only.
precision_flags=()
[[ "$major" == 10 ]] && precision_flags=(--stronglyTyped)

# build MODEL TAG MIN OPT MAX: one engine for one profile, its plugin layers counted.
build() {
  local onnx="$1" tag="$2" min="$3" opt="$4" max="$5"
  local plan="${onnx%.onnx}.$tag.plan" info=()
  [[ -n "$plugin" ]] && info=(--exportLayerInfo="${plan%.plan}.layers.json" --profilingVerbosity=detailed)
  run "${trtexec:-trtexec}" --onnx="$onnx" \
    --minShapes="$min" --optShapes="$opt" --maxShapes="$max" \
    "${plugin_flags[@]}" "${precision_flags[@]}" "${info[@]}" \
    --timingCacheFile="$timing_cache" \
    --skipInference \
    --saveEngine="$plan"
  [[ -z "$plugin" ]] || check "$onnx" --layer-info "${plan%.plan}.layers.json"
}

shopt -s nullglob
found=0
# Single ops, named by `mhc-export export --op`: mhc_<op>_n<N>_d<D>_<dtype>.onnx.
# Only T (dim 0) is dynamic; the weights (hc_fn, hc_scale, hc_base) are static.
for onnx in "$model_dir"/mhc_{pre,sinkhorn,post,head,post_pre,post_head}_n*_d*_*.onnx; do
  found=1
  base="$(basename "$onnx" .onnx)"
  op="$(sed -E 's/^mhc_(.*)_n[0-9]+_d.*/\1/' <<<"$base")"
  n="$(sed -E 's/.*_n([0-9]+)_d.*/\1/' <<<"$base")"
  d="$(sed -E 's/.*_d([0-9]+)_.*/\1/' <<<"$base")"
  shapes() {  # shapes T: the per-token inputs of the op at T tokens
    case "$op" in
      pre|head) echo "residual:${1}x${n}x${d}" ;;
      sinkhorn) echo "logits:${1}x${n}x${n}" ;;
      post|post_pre|post_head)
        echo "x:${1}x${d},residual:${1}x${n}x${d},post_mix:${1}x${n},comb_mix:${1}x${n}x${n}" ;;
    esac
  }
  check "$onnx"
  build "$onnx" decode "$(shapes 1)" "$(shapes "$decode_max")" "$(shapes "$decode_max")"
  build "$onnx" prefill "$(shapes 1)" "$(shapes "$prefill_max")" "$(shapes "$prefill_max")"
done

# Full model (mhc-export export --config C): tokens [batch, seq] int64 -> logits.
# decode: one new token for up to DECODE_MAX sequences; prefill: one prompt of
# up to PREFILL_MAX tokens.
for onnx in "$model_dir"/mhc_*.onnx; do
  [[ "$(basename "$onnx")" =~ ^mhc_(pre|sinkhorn|post|head|post_pre|post_head)_n ]] && continue
  found=1
  check "$onnx"
  build "$onnx" decode tokens:1x1 "tokens:${decode_max}x1" "tokens:${decode_max}x1"
  build "$onnx" prefill tokens:1x1 "tokens:1x${prefill_max}" "tokens:1x${prefill_max}"
done

if [[ "$found" == 0 ]]; then
  echo "trtexec.sh: no mhc_*.onnx in $model_dir; export one first (mhc-export export ...)" >&2
  exit 2
fi
