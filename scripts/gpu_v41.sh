#!/usr/bin/env bash
# DeepSeek-V4.1 kernels and plugins on the GPU machine, in one device call:
# build (kernels for sm_90; the plugin library and harness too when TensorRT
# headers are in .trt_headers/), the GPU tests, the benchmark (bench_v41.py, V4's
# MhcPostPre in the same run) and ncu profiles of MhcPostMix. Logs, JSON and the
# ncu report go to $OUT (or out/gpu_v41).
#   scripts/gpu_v41.sh [steps...]   steps (default: build tests bench ncu):
#     build tests harness fuzz bench ncu stalls
#   env: BENCH_T (T list), BENCH_D (d list), TEST_K (pytest -k filter),
#     BENCH_ALT (';'-separated switch sets, each benched after the default build
#     in the same run, default MHC_V41_COALESCED_LOADS=1; empty: none), BENCH_ALT_T
#     (their T list),
#     FUZZ_COUNT (scripts/fuzz.py --gpu --only kernels configurations, every op),
#     NCU_JOBS (lines "[VAR=value ...] op T d" for scripts/profile_kernel.py).
#   Without the build step the kernel library of build/plugins-trt11 is used as
#   it is (built elsewhere for sm_90 and carried, to save device time).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-$root/out/gpu_v41}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
steps=${*:-build tests bench ncu}
build=$root/build/plugins-trt11
export MHC_KERNELS_LIB=$build/kernels/libmhc_kernels.so
rc=0
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
  python3 -c 'import torch; print("torch", torch.__version__)'; } 2>&1 | tee "$out/env.txt"
for step in $steps; do
  t0=$(date +%s)
  case $step in
    build)
      if [ -d "$root/.trt_headers/tensorrt-11.1" ]; then
        args=(-DTENSORRT_ROOT="$root/.trt_headers/tensorrt-11.1")
      else
        args=(-DMHC_BUILD_TRT_PLUGINS=OFF)
      fi
      TENSORRT_ROOT="$root/.trt_headers/tensorrt-11.1" MHC_CUDA_ARCHS=${MHC_CUDA_ARCHS:-90} \
        scripts/build_plugins.sh "$build" "${args[@]}" -DMHC_PTXAS_VERBOSE=ON > "$out/build.txt" 2>&1 \
        || { tail -40 "$out/build.txt"; echo "BUILD FAILED"; exit 1; }
      grep -A2 "v41StreamKernel" "$out/build.txt" | grep -E "registers|spill" | head -4 ;;
    tests)
      MHC_REQUIRE_PLUGIN_BUILDS=1 MHC_REQUIRE_GPU=1 timeout ${TEST_TIMEOUT:-240} python3 -m pytest \
        -q -p no:cacheprovider -rs tests/test_kernels_v41.py ${TEST_K:+-k "$TEST_K"} \
        --junitxml="$out/tests.xml" > "$out/tests.txt" 2>&1 || rc=1
      tail -15 "$out/tests.txt" ;;
    harness)
      MHC_REQUIRE_PLUGIN_BUILDS=1 MHC_REQUIRE_GPU=1 MHC_TRT_HEADERS=$root/.trt_headers \
        timeout ${HARNESS_TIMEOUT:-200} python3 -m pytest -q -p no:cacheprovider -rs \
        tests/test_plugin_harness.py -k "mix or collapse" --junitxml="$out/harness.xml" \
        > "$out/harness.txt" 2>&1 || rc=1
      tail -8 "$out/harness.txt" ;;
    fuzz)  # every op (V4 and V4.1) on the CUDA kernels against float64
      timeout ${FUZZ_TIMEOUT:-120} python3 scripts/fuzz.py --gpu --only kernels \
        --count ${FUZZ_COUNT:-40} --seed ${FUZZ_SEED:-23} --json "$out/fuzz.json" \
        > "$out/fuzz.txt" 2>&1 || rc=1
      tail -8 "$out/fuzz.txt" ;;
    bench)  # the default build, then the same with the BENCH_ALT switches, in one run
      timeout ${BENCH_TIMEOUT:-240} python3 benchmarks/bench_v41.py \
        --t-list ${BENCH_T:-1,8,64,512,4096,16384} --d-list ${BENCH_D:-5120,7168} \
        --json "$out/bench_v41.json" 2>&1 | tee "$out/bench.txt" || rc=1
      k=0
      IFS=';' read -r -a alts <<< "${BENCH_ALT-MHC_V41_COALESCED_LOADS=1}"
      for alt in "${alts[@]}"; do
        [ -z "${alt// /}" ] && continue
        k=$((k + 1))
        echo "== alt$k: $alt" | tee "$out/bench_alt$k.txt"
        env $alt timeout ${BENCH_TIMEOUT:-240} python3 benchmarks/bench_v41.py \
          --t-list ${BENCH_ALT_T:-${BENCH_T:-1,8,64,512,4096,16384}} --d-list ${BENCH_D:-5120,7168} \
          --json "$out/bench_v41_alt$k.json" 2>&1 | tee -a "$out/bench_alt$k.txt" || rc=1
      done ;;
    stalls)  # where the stream kernel's warps wait, per issued instruction
      timeout 120 ncu --section SpeedOfLight --section Occupancy \
        --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
        -k regex:v41StreamKernel --launch-skip 2 --launch-count 1 \
        python3 scripts/profile_kernel.py post_mix 4096 5120 > "$out/stalls.txt" 2>&1 || rc=1
      grep -E "^    (Duration|DRAM Throughput|Achieved Occupancy)" "$out/stalls.txt"
      grep -E "stalled" "$out/stalls.txt" | sort -k3 -n -r | head -8 ;;
    ncu)
      sec="--section SpeedOfLight --section Occupancy --section LaunchStats \
        --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats"
      met="dram__bytes_read.sum,dram__bytes_write.sum,smsp__inst_executed.sum"
      n=0
      while read -r job; do
        [ -z "$job" ] && continue
        n=$((n + 1))
        read -r -a w <<< "$job"
        envs=(); while [[ "${w[0]}" == *=* ]]; do envs+=("${w[0]}"); w=("${w[@]:1}"); done
        echo "######## ncu $n: $job" >> "$out/ncu.txt"
        env "${envs[@]}" timeout 120 ncu $sec --metrics "$met" -k regex:${NCU_KERNEL:-v41} \
          --launch-skip 2 --launch-count 2 python3 scripts/profile_kernel.py "${w[@]}" \
          >> "$out/ncu.txt" 2>&1 || rc=1
        echo "== ncu $job"; sed -n '/######## ncu '"$n"': /,$p' "$out/ncu.txt" \
          | grep -E "^  [a-zA-Z_].*\(|^    (Duration|DRAM Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Issue Slots Busy|No Eligible|dram__bytes|smsp__inst)" | head -24
      done <<< "${NCU_JOBS:-post_mix 4096 5120
MHC_V41_COALESCED_LOADS=1 post_mix 4096 5120}" ;;
    *) echo "unknown step $step"; rc=2 ;;
  esac
  echo "[$step: $(( $(date +%s) - t0 )) s]"
done
exit $rc
