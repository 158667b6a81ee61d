#!/usr/bin/env bash
# One device call for the prefill paths (issue 22): the kernel library (carried
# prebuilt for sm_90 at build/plugins-trt11/kernels/libmhc_kernels.so, else built
# here), GPU tests of the new paths, benchmarks of every path in the same run
# (JSON to $OUT), ncu DRAM / L2 bytes of one call.
#   device tool: cd .dev/<branch> && scripts/gpu_prefill.sh [steps]
# steps (default: smoke tests bench boundary ncu): smoke tests bench sweep boundary ncu
# env: MODES (bench: "auto legacy twopass"), BOUNDARY_MODES ("auto legacy"), SWEEP
# (sweep: chunked variants), BENCH_T, MODE_T, SWEEP_T, SWEEP_OPS, BOUNDARY_T, TESTS_K, NCU_JOBS.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/out/gpu_prefill}
mkdir -p "$out"
cd "$root"
steps=${*:-smoke tests bench boundary ncu}
export PYTHONUNBUFFERED=1 PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader; } \
  2>&1 | tee "$out/env.txt"
lib=$root/build/plugins-trt11/kernels/libmhc_kernels.so
if [ ! -f "$lib" ]; then
  t0=$(date +%s)
  MHC_TRT_HEADERS=${MHC_TRT_HEADERS:-$root/.trt_headers} MHC_CUDA_ARCHS=${MHC_CUDA_ARCHS:-90} \
    scripts/build_plugins.sh "$root/build/plugins-trt11" -DMHC_BUILD_TRT_PLUGINS=OFF \
    -DMHC_PTXAS_VERBOSE=ON > "$out/build.txt" 2>&1 \
    || { tail -40 "$out/build.txt"; echo "BUILD FAILED"; exit 1; }
  echo "build ok in $(( $(date +%s) - t0 )) s"
fi
export MHC_KERNELS_LIB=$lib MHC_REQUIRE_PLUGIN_BUILDS=1 MHC_REQUIRE_GPU=1
rc=0
# The environment of a benchmark mode: the table (auto), a path forced, and/or a
# row parameter overridden; parts joined by '+', e.g. chunked+ft1+frac40.
mode_env() {
  local part
  for part in ${1//+/ }; do
    case $part in
      legacy|twopass|chunked) echo MHC_PREFILL=$part ;;   # legacy: the paths before issue 22
      nopdl) echo MHC_PREFILL_PDL=0 ;;
      hint*) echo MHC_PREFILL_HINTS=${part#hint} ;;
      pdl*) echo MHC_PREFILL_PDL=${part#pdl} ;;
      frac*) echo MHC_PREFILL_L2_FRAC=0.${part#frac} ;;
      kr*) echo MHC_PREFILL_KR=${part#kr} ;;
      tt*) echo MHC_PREFILL_TT=${part#tt} ;;
      ft*) echo MHC_PREFILL_FT=${part#ft} ;;
    esac                                                  # auto: the table
  done
}
bench() {  # bench MODE OPS T-LIST EXTRA...
  local mode=$1 ops=$2 tl=$3; shift 3
  env $(mode_env "$mode") timeout 200 python3 benchmarks/bench_kernels.py --ops "$ops" \
    --no-compile --no-eager --t-list "$tl" "$@" --json "$out/prefill_bench_$mode.json" \
    > "$out/bench_$mode.txt" 2>&1 || rc=1
  echo "== bench $mode"; grep -E "^(pre|head) +[0-9]|Error|error" "$out/bench_$mode.txt" | cut -c1-150
}
for step in $steps; do
  t1=$(date +%s)
  case $step in
    smoke)  # a hang or a crash shows here in seconds
      for job in "auto:pre 4099 7168" "auto:post_pre 4099 7168" "twopass:head 1000 4096" \
                 "chunked:pre 300 1024 --n 2"; do
        env $(mode_env ${job%%:*}) timeout 60 python3 scripts/profile_kernel.py ${job#*:} 2>&1 \
          | tail -1 || { rc=1; echo "SMOKE FAILED: $job"; }
      done ;;
    tests)
      timeout ${TEST_TIMEOUT:-240} python3 -m pytest -q -p no:cacheprovider -x -rP \
        tests/test_kernels.py -k "${TESTS_K:-prefill or v4_all_t or post_pre or deterministic or garbage or graph or streaming or fused_tiles}" \
        2>&1 | tee "$out/tests.txt" | grep -E "rel err vs|passed|failed|Error" | tail -40
      [ "${PIPESTATUS[0]}" = 0 ] || rc=1 ;;
    bench)  # every path at the issue's sizes, the two-pass torch baseline beside the table's
      for mode in ${MODES:-auto legacy twopass}; do
        if [ "$mode" = auto ]; then
          bench auto pre,head "${BENCH_T:-1,64,512,4096,16384}"
        else
          bench "$mode" pre,head "${MODE_T:-512,4096,16384}" --no-twopass --peer none
        fi
      done ;;
    sweep)  # chunked variants (l2 share, slices per CTA, tokens per CTA, PDL)
      for mode in ${SWEEP:-nopdl frac20 frac45 kr2}; do
        bench "$mode" "${SWEEP_OPS:-pre,head}" "${SWEEP_T:-512,4096,16384}" --no-twopass --peer none
      done ;;
    boundary)
      for mode in ${BOUNDARY_MODES:-auto legacy}; do
        env $(mode_env $mode) timeout 200 python3 benchmarks/bench_boundary.py \
          --t-list ${BOUNDARY_T:-1,64,512,4096,16384} --json "$out/prefill_boundary_$mode.json" \
          > "$out/boundary_$mode.txt" 2>&1 || rc=1
        echo "== boundary $mode"; grep -E "^d=" "$out/boundary_$mode.txt"
      done ;;
    ncu)  # one call's DRAM and L2 bytes, summed over its launches (caches kept between them)
      m=${NCU_METRICS:-dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sectors_srcunit_tex_op_read_lookup_hit.sum,gpu__time_duration.sum}
      for job in ${NCU_JOBS:-"auto:pre:4096" "twopass:pre:4096" "legacy:pre:4096" "auto:head:4096" "auto:post_pre:4096"}; do
        IFS=: read -r mode op t <<< "$job"
        f=$out/ncu_${mode}_${op}_$t.csv
        for metrics in "$m" "dram__bytes_read.sum,dram__bytes_write.sum,gpu__time_duration.sum"; do
          env $(mode_env $mode) timeout 120 ncu --profile-from-start off --cache-control none \
            --metrics "$metrics" --csv python3 scripts/profile_kernel.py $op $t 7168 --calls 3 \
            --profile-call 2 > "$f" 2>&1 || rc=1
          grep -q '"Metric Name"' "$f" && break  # else an unknown L2 metric: DRAM alone
        done
        python3 - "$f" "$mode $op T=$t d=7168" <<'EOF'
import csv, sys
from collections import defaultdict
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows or "Metric Name" not in rows[0]:
    print("==", sys.argv[2], "no ncu rows:", open(sys.argv[1]).read()[-400:]); sys.exit(0)
h = rows[0]; name, val, unit = h.index("Metric Name"), h.index("Metric Value"), h.index("Metric Unit")
kid = h.index("ID")
scale = {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "sector": 32, "nsecond": 1e-3,
         "ns": 1e-3, "usecond": 1, "us": 1, "msecond": 1e3, "ms": 1e3}
tot, launches = defaultdict(float), set()
for r in rows[1:]:
    launches.add(r[kid])
    tot[r[name]] += float(r[val].replace(",", "")) * scale.get(r[unit], 1)
mb = lambda k: tot.get(k, float("nan")) / 1e6
dur = [float(r[val].replace(",", "")) * scale.get(r[unit], 1) for r in rows[1:]
       if r[name] == "gpu__time_duration.sum"]
units = sorted({r[unit] for r in rows[1:] if r[name] == "gpu__time_duration.sum"})
print(f"   launch durations ({units}): " + " ".join(f"{x:.1f}" for x in dur[:6])
      + (f" ... {dur[-1]:.1f}" if len(dur) > 6 else ""))
print(f"== ncu {sys.argv[2]}: {len(launches)} launches, DRAM read {mb('dram__bytes_read.sum'):.1f} MB,"
      f" write {mb('dram__bytes_write.sum'):.1f} MB, L2 read from SMs"
      f" {mb('lts__t_sectors_srcunit_tex_op_read.sum'):.1f} MB (hits"
      f" {mb('lts__t_sectors_srcunit_tex_op_read_lookup_hit.sum'):.1f} MB), kernel time"
      f" {tot.get('gpu__time_duration.sum', float('nan')):.1f} us (serialised)")
EOF
      done ;;
  esac
  echo "step $step: $(( $(date +%s) - t1 )) s"
done
# One archive: the device tool returns only a few files per call.
tgz=$(mktemp /tmp/prefill_run.XXXXXX.tgz)
tar czf "$tgz" -C "$out" . && find "$out" -mindepth 1 -delete && mv "$tgz" "$out/prefill_run.tgz"
exit $rc
