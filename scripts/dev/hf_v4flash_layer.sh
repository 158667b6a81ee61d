#!/usr/bin/env bash
# One real-size DeepSeek-V4-Flash layer, exported on a CPU machine (docs/HF.md "Your checkpoint").
#
# Writes layers 3 (HCA) and 4 (CSA) of V4-Flash in the published layout (native names, FP8 +
# UE8M0 128x128 blocks, FP4 experts, 256 experts, vocab 129280; random stored codes; 9.3 GB)
# to $DIR outside the repository, then exports each layer with native weights (validated
# against the independent float64 reading of the files), and shows the bf16 refusal.
# Logs (wall time, peak RSS from /usr/bin/time -v) and reports go to $OUT.
set -euo pipefail
DIR=${DIR:-/tmp/v4flash}
OUT=${OUT:-/tmp/v4flash_runs}
PY=${PY:-python}
mkdir -p "$OUT"
if [ ! -f "$DIR/model.safetensors.index.json" ]; then
  "$PY" -c "from mhc_export.testing.v4_checkpoints import flash_config, write_real_layers
write_real_layers('$DIR', flash_config(), [3, 4])"
fi
for L in 3:4 4:5; do
  n=${L/:/-}
  /usr/bin/time -v "$PY" -m mhc_export export --hf "$DIR" --layers "$L" --weights native \
    --out "$OUT/flash_$n.onnx" > "$OUT/flash_$n.log" 2>&1
  grep -E "mhc-export\]|RESULT|Maximum resident|Elapsed" "$OUT/flash_$n.log" | grep -v "^    "
done
# bf16 does not fit in 24 GiB: refused before loading, naming what fits (exit 2).
"$PY" -m mhc_export export --hf "$DIR" --layers 3:4 --dtype bfloat16 --out "$OUT/bf16.onnx" || true
