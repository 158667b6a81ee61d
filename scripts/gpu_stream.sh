#!/usr/bin/env bash
# One device call for the streaming cluster kernel (issues 10/11): build the
# kernels for sm_90, the kernel tests, the benchmarks of the new path against
# the v5 cluster kernel (MHC_STREAM=0) in the same run, and ncu profiles.
#   device tool: scripts/gpu_stream.sh [steps]   (carry [".trt_headers"])
# steps (default: smoke bench ncu tests boundary): smoke tests bench boundary model peer
# post ncu stalls sass decode. The peer step needs the FlashInfer bundle in .peers/
# (benchmarks/peers/flashinfer_mhc.py says how to make it): carry [".trt_headers", ".peers"].
# env: MODES (bench, boundary: "stream v5"; stream = the default dispatch, others:
# mode_env below), BENCH_OPS, BENCH_T, TESTS, TESTS_K, NCU_KERNEL.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/out/gpu_stream}
mkdir -p "$out"
cd "$root"
steps=${*:-smoke bench ncu tests boundary}
export PYTHONUNBUFFERED=1 PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader; } \
  2>&1 | tee "$out/env.txt"
t0=$(date +%s)
MHC_TRT_HEADERS=${MHC_TRT_HEADERS:-$root/.trt_headers} MHC_CUDA_ARCHS=${MHC_CUDA_ARCHS:-90} \
  scripts/build_plugins.sh "$root/build/plugins-trt11" -DMHC_BUILD_TRT_PLUGINS=OFF \
  -DMHC_PTXAS_VERBOSE=ON > "$out/build.txt" 2>&1 \
  || { tail -40 "$out/build.txt"; echo "BUILD FAILED"; exit 1; }
echo "build ok in $(( $(date +%s) - t0 )) s"
grep -A2 "streamKernel" "$out/build.txt" | grep -E "spill|registers" | sort | uniq -c | head -20
export MHC_KERNELS_LIB=$root/build/plugins-trt11/kernels/libmhc_kernels.so
export MHC_REQUIRE_PLUGIN_BUILDS=1 MHC_REQUIRE_GPU=1
rc=0
# The environment of a benchmark mode (MODES).
mode_env() {
  case $1 in
    v5) echo MHC_STREAM=0 ;;                             # the v5 cluster kernel at large T
    nodecode) echo MHC_DECODE_MAX_T=0 ;;                 # small T on the large-T kernels
    tokenmajor) echo MHC_POST_TOKEN_MAJOR=1 ;;           # MhcPost's older grid order
  esac                                                   # anything else: the default dispatch
}
for step in $steps; do
  t1=$(date +%s)
  case $step in
    smoke)  # a hang or a crash shows here in seconds, not in a test timeout
      for job in "pre 4096 7168" "head 4099 7168" "post_pre 300 4096" "post_head 517 1000" \
                 "pre 300 64 --n 8"; do
        timeout 60 python3 scripts/profile_kernel.py $job 2>&1 | tail -2 || { rc=1; echo "SMOKE FAILED: $job"; }
      done ;;
    tests)
      timeout ${TEST_TIMEOUT:-300} python3 -m pytest -q -p no:cacheprovider -x -rP \
        ${TESTS:-tests/test_kernels.py} ${TESTS_K:+-k "$TESTS_K"} 2>&1 | tee "$out/tests.txt" | grep -E "rel err vs|passed|failed|Error" | tail -40
      [ "${PIPESTATUS[0]}" = 0 ] || rc=1 ;;
    bench)
      for mode in ${MODES:-stream v5}; do
        env $(mode_env $mode) timeout 240 python3 benchmarks/bench_kernels.py \
          --ops ${BENCH_OPS:-pre,head} --no-compile --no-eager --t-list ${BENCH_T:-1,64,512,4096,16384} \
          --json "$out/bench_$mode.json" > "$out/bench_$mode.txt" 2>&1 || rc=1
        echo "== $mode"; grep -E "^(pre|head) " "$out/bench_$mode.txt" | cut -c1-90
      done ;;
    boundary)
      for mode in ${MODES:-stream v5}; do
        env $(mode_env $mode) timeout 200 python3 benchmarks/bench_boundary.py \
          --t-list 1,8,64,512,4096,16384 --json "$out/boundary_$mode.json" \
          > "$out/boundary_$mode.txt" 2>&1 || rc=1
        echo "== boundary $mode"; grep -E "^d=" "$out/boundary_$mode.txt"
      done ;;
    decode)  # per-kernel times of the small-T paths (ncu serialises PDL chains)
      for job in "pre 1 7168" "pre 8 7168" "head 1 7168" "post_pre 1 7168" "post_head 1 7168"; do
        echo "######## decode $job" >> "$out/ncu.txt"
        timeout 120 ncu --section SpeedOfLight -k regex:Kernel --launch-skip 2 --launch-count 4 \
          python3 scripts/profile_kernel.py $job --calls 6 > "$out/dec.tmp" 2>&1 || rc=1
        cat "$out/dec.tmp" >> "$out/ncu.txt"
        echo "== decode $job"; awk '/^  [a-zA-Z_].*\(/{k=$2" "$3} /Duration/{print "   ", k, $NF, "us"}' \
          "$out/dec.tmp" | head -6
      done; rm -f "$out/dec.tmp" ;;
    ncu)
      sec="--section SpeedOfLight --section Occupancy --section LaunchStats \
        --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats"
      for job in "pre 4096 7168" "post_pre 4096 7168" "head 4096 7168"; do
        f=$out/ncu.txt
        echo "######## ncu $job" >> "$f"
        timeout 120 ncu $sec -k regex:${NCU_KERNEL:-streamKernel} --launch-skip 1 --launch-count 1 \
          python3 scripts/profile_kernel.py $job >> "$f" 2>&1 || rc=1
        echo "== ncu $job"; sed -n '/######## ncu '"$job"'/,$p' "$f" \
          | grep -E "^    (Duration|DRAM Throughput|Issue Slots Busy|No Eligible)" | head -6
      done ;;
    peer)  # ours next to FlashInfer 0.7.2 (carry ".peers": benchmarks/peers/flashinfer_mhc.py)
      MHC_REQUIRE_GPU=1 timeout 200 python3 -m pytest -q -p no:cacheprovider -rs -m peer \
        tests/test_peer_flashinfer.py > "$out/peer_test.txt" 2>&1 || rc=1
      tail -3 "$out/peer_test.txt"
      timeout 300 python3 benchmarks/bench_kernels.py --peer flashinfer --ops pre,post \
        --no-compile --no-eager --t-list ${BENCH_T:-1,8,64,512,4096,16384} \
        --json "$out/bench_peer.json" > "$out/bench_peer.txt" 2>&1 || rc=1
      grep -E "^peer:|^(pre|post) +[0-9]" "$out/bench_peer.txt" | cut -c1-130 ;;
    post)  # MhcPost: chunk-major grid (default) vs token-major, FlashInfer when carried
      for order in default tokenmajor; do
        env $(mode_env $order) timeout 200 python3 \
          benchmarks/bench_kernels.py --ops post --no-compile --no-eager \
          --t-list ${BENCH_T:-1,8,64,512,4096,16384} --json "$out/post_$order.json" \
          > "$out/post_$order.txt" 2>&1 || rc=1
        echo "== post, $order"; grep -E "^peer:|^post +[0-9]" "$out/post_$order.txt" | cut -c1-130
      done ;;
    model)  # the whole-model mHC time, plain vs fused (issue 11)
      timeout 240 python3 benchmarks/bench_model_mhc.py --json "$out/bench_model.json" \
        > "$out/bench_model.txt" 2>&1 || rc=1
      tail -6 "$out/bench_model.txt" ;;
    stalls)  # where the warps wait: stall reasons per issued instruction
      for job in "pre 4096 7168" "head 4096 7168"; do
        echo "######## stalls $job" >> "$out/ncu.txt"
        timeout 120 ncu --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
          -k regex:${NCU_KERNEL:-streamKernel} --launch-skip 1 --launch-count 1 \
          python3 scripts/profile_kernel.py $job > "$out/stalls.tmp" 2>&1 || rc=1
        cat "$out/stalls.tmp" >> "$out/ncu.txt"
        echo "== stalls $job"; grep -E "stalled_" "$out/stalls.tmp" | awk '{print $NF, $1}' \
          | sort -rn | head -8
      done; rm -f "$out/stalls.tmp" ;;
    sass)
      cuobjdump -sass "$MHC_KERNELS_LIB" > "$out/sass.tmp" 2>/dev/null
      awk '/Function : _ZN3mhc12streamKernelILi4ELb0ELb0ELi4E/{f=1;next} /Function : /{f=0} f' \
        "$out/sass.tmp" > "$out/sass_pre_n4_gw4.txt"
      rm -f "$out/sass.tmp"
      echo "== sass pre n=4 gw=4: $(wc -l < "$out/sass_pre_n4_gw4.txt") lines"
      grep -oE "(MEMBAR[A-Z.]*|UCGABAR[A-Z_.]*|CCTL[A-Z.]*|FENCE[A-Z.]*|BAR\.[A-Z.]*|SYNCS[A-Z.]*|LDGDEPBAR|DEPBAR[A-Z.]*|HMMA[A-Z0-9.]*|LDL|STL|LDSM[A-Z.0-9]*)" \
        "$out/sass_pre_n4_gw4.txt" | sort | uniq -c ;;
  esac
  echo "step $step: $(( $(date +%s) - t1 )) s"
done
exit $rc
