#!/usr/bin/env bash
# The GPU machine's runner: one device call per mode, each building what it needs for
# sm_90 and writing its logs and JSON to $OUT (./out/gpu_<mode> without it).
#
#   here:        scripts/gpu/run.sh prepare          the TensorRT headers into .trt_headers/, the
#                                                     pinned transformers' wheels into .wheels/
#   GPU machine: scripts/gpu/run.sh MODE [ARGS...]   (device tool: carry [".trt_headers"],
#                                                     and ".peers" / ".wheels" where said)
#   anywhere:    scripts/gpu/run.sh --dry-run MODE ...  (or MHC_DRY_RUN=1): print the commands
#                                                     it would run, build and run nothing
# Modes:
#   gate [PYTEST ARGS]  the whole suite (or e.g. -m gpu) with the builds required: both header
#                       sets (scripts/dev/build_plugins_ci.sh), then the JUnit gate (a skipped
#                       or missing GPU test fails; at least MIN_GATE of them). The wheels in
#                       .wheels/ go first on the path (the machine's transformers predates V4).
#                       GATE_BENCH=1: then each benchmark driver once on short lists.
#   kernels [BENCH ARGS] kernel build, the kernel GPU tests (gated, MIN_KERNELS),
#                       benchmarks/bench_kernels.py with eager and torch.compile; with .peers
#                       also FlashInfer's test and columns (a bundle that does not load fails).
#   stream [STEPS]      kernel build, then steps (default: smoke bench ncu tests boundary) of
#                       smoke tests bench boundary model peer post ncu stalls sass decode.
#                       env: MODES ("stream v5"), BENCH_OPS, BENCH_T, TESTS, TESTS_K, NCU_KERNEL
#   fuzz [COUNT] [SEED] kernel + plugin build, scripts/qa/fuzz.py --gpu (default 1000 7;
#                       HARNESS_EVERY)
#   hf [BENCH ARGS]     installs the .wheels/ set (transformers required), kernel build,
#                       tests/test_hf_gpu.py, benchmarks/bench_hf_layers.py
#   prefill [STEPS]     the kernel library (incremental build), then steps (default: smoke
#                       tests bench boundary ncu) of smoke tests bench sweep boundary ncu. env: MODES ("auto legacy twopass"),
#                       BOUNDARY_MODES ("auto legacy"), SWEEP, BENCH_T, MODE_T, SWEEP_T,
#                       SWEEP_OPS, BOUNDARY_T, TESTS_K, NCU_JOBS, NCU_METRICS, MODE_OPS,
#                       STALL_MODES ("twopass": ncu stalls and DRAM bytes of the projection)
#   v41 [STEPS]         steps (default: build tests bench ncu) of build tests quicktests alltests
#                       kerneltests harness fuzz bench pdl groups l2fetch ab ncu stalls clocks
#                       pcstalls imix sass decode phases probe (plugins too when .trt_headers is carried; ab: against .base/, made here by
#                       `scripts/gpu/run.sh prepare-base [REF]`). env: BENCH_T, BENCH_D, AB_MODES,
#                       TEST_K, NCU_JOBS, NCU_KERNEL, V41_MODES ("balanced"; mode_env parts, e.g.
#                       coalesced+staged), V41_MODE_T, V41_STALL_MODES, V41_STALL_T, PCS_JOBS,
#                       PCS_MODES. Mode lib<NAME>: the kernel library .variants/NAME.so, built
#                       here (e.g. a worktree with a patch of docs/journal/patches/ applied;
#                       MHC_CUDA_ARCHS=90-real keeps it at 17 MB, so three fit the carry)
# Everywhere: more than 8 files in $OUT end as one MODE_run.tgz (the device tool returns 8).
# MHC_CUDA_ARCHS (90), TEST_TIMEOUT, BENCH_TIMEOUT, MHC_MIN_GPU_TESTS (a subset's
# floor). A benchmark mode's environment: mode_env below.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# Fewest GPU tests a gated run may collect (raise them when adding GPU tests).
MIN_GATE=408     # gate: the whole suite's gpu-marked tests
MIN_KERNELS=363  # kernels: the kernel test files
MIN_KERNEL_PLUGIN=404  # v41 alltests: the gate less test_hf_gpu
MIN_KERNEL_FILES=364   # v41 kerneltests: alltests less the plugin harness
KLIB=$root/build/plugins-trt11/kernels/libmhc_kernels.so
dry=${MHC_DRY_RUN:-0}
[ "${1:-}" = --dry-run ] && { dry=1; shift; }
mode=${1:-}
shift || true
rc=0
exec 3>&1  # the dry run prints here whatever the step's redirections

# ---- shared parts -----------------------------------------------------------------------
x() {  # run a command, or print it in a dry run (quoted only where the shell needs it)
  local a line=+
  if [ "$dry" = 1 ]; then
    for a in "$@"; do
      if [[ $a =~ ^[][A-Za-z0-9_./:=,+@%*-]+$ ]]; then line+=" $a"; else line+=" $(printf %q "$a")"; fi
    done
    echo "$line" >&3
    return 0
  fi
  "$@"
}
show() { [ "$dry" = 1 ] || "$@"; }  # a summary of a log: nothing to read in a dry run
setenv() {  # export K=V..., printed in a dry run
  [ "$dry" = 1 ] && echo "+ export $*" >&3
  local kv
  for kv in "$@"; do export "${kv?}"; done
}
VERSIONS='import importlib.util as u, torch
print("torch", torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")
for m in ("onnx", "onnxruntime", "transformers"):
    if u.find_spec(m): print(m, __import__(m).__version__)'
print_env() {  # date, GPU, versions -> $out/env.txt
  { x date -u
    x nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
    x python3 -c "$VERSIONS"
  } 2>&1 | tee "$out/env.txt"
}
install_wheels() {  # required|optional: the carried transformers and its hub dependencies
  # The GPU machine's transformers predates DeepSeek-V4: the wheels `prepare` put in
  # .wheels/ go first on the path, and the run stops before the build if they do not import.
  if ! ls "$root"/.wheels/transformers-*.whl >/dev/null 2>&1; then
    [ "$1" = optional ] && return 0
    [ "$dry" = 1 ] || { echo "no .wheels/transformers-*.whl (scripts/gpu/run.sh prepare makes it)"; exit 1; }
  fi
  x python3 -m pip install -q --no-deps --target /tmp/site "$root"/.wheels/*.whl \
    > "$out/pip.txt" 2>&1 || { tail -5 "$out/pip.txt"; echo "PIP FAILED"; exit 1; }
  setenv PYTHONPATH=/tmp/site:$PYTHONPATH
  x python3 -c 'import transformers.models.deepseek_v4' 2>&1 | tail -1 | tee "$out/transformers.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "CARRIED TRANSFORMERS DOES NOT IMPORT"; exit 1; }
}
build() {  # ci | kernels | plugins -> build/ (log $out/build.txt); phases -> build/phases (the
  # kernels with MHC_PHASE_CLOCKS, log $out/build_phases.txt); exits on failure
  local t0 archs=MHC_CUDA_ARCHS=${MHC_CUDA_ARCHS:-90} cmd log=$out/build.txt
  t0=$(date +%s)
  case $1 in
    ci) cmd=(env MHC_TRT_HEADERS="$root/.trt_headers" "$archs" bash scripts/dev/build_plugins_ci.sh) ;;
    kernels) cmd=(env "$archs" bash scripts/dev/build_plugins.sh "$root/build/plugins-trt11"
                  -DMHC_BUILD_TRT_PLUGINS=OFF -DMHC_PTXAS_VERBOSE=ON) ;;
    plugins) cmd=(env TENSORRT_ROOT="$root/.trt_headers/tensorrt-11.1" "$archs"
                  bash scripts/dev/build_plugins.sh "$root/build/plugins-trt11" -DMHC_PTXAS_VERBOSE=ON) ;;
    phases) cmd=(env "$archs" bash scripts/dev/build_plugins.sh "$root/build/phases"
                 -DMHC_BUILD_TRT_PLUGINS=OFF -DMHC_PHASE_CLOCKS=ON)
            log=$out/build_phases.txt ;;
    *) echo "unknown build '$1' (ci, kernels, plugins or phases)"; exit 2 ;;
  esac
  x "${cmd[@]}" > "$log" 2>&1 || { tail -40 "$log"; echo "BUILD FAILED"; exit 1; }
  echo "build $1 ok in $(( $(date +%s) - t0 )) s"
}
registers() { show grep -A2 "$1" "$out/build.txt" | grep -E "registers|spill" | sort | uniq -c | head -20; }
gated_pytest() {  # MIN MARKS TIMEOUT PYTEST ARGS...: every MARKS test must run and pass
  local min=$1 marks=$2 limit=$3 tests gate
  shift 3
  x python3 -m pytest --collect-only -q -p no:cacheprovider -m "$marks" "$@" 2>&1 \
    | grep '::' > "$out/gpu_tests.txt"
  x timeout "$limit" python3 -m pytest -q -p no:cacheprovider -rs --junitxml="$out/tests.xml" \
    "$@" 2>&1 | tee "$out/tests.txt" | tail -45
  tests=${PIPESTATUS[0]}
  x python3 scripts/qa/junit_gate.py "$out/tests.xml" --expect "$out/gpu_tests.txt" \
    --min "${MHC_MIN_GPU_TESTS:-$min}" 2>&1 | tee "$out/gate.txt" | tail -25
  gate=${PIPESTATUS[0]}
  [ "$tests" = 0 ] && [ "$gate" = 0 ] || rc=1
}
require_gpu() {  # a missing build or CUDA device fails the GPU tests instead of skipping them
  setenv MHC_KERNELS_LIB="${MHC_KERNELS_LIB:-$KLIB}" MHC_REQUIRE_PLUGIN_BUILDS=1 MHC_REQUIRE_GPU=1
}
mode_env() {  # the environment of a benchmark mode; parts joined by '+', e.g. chunked+ft1+frac40
  local part
  for part in ${1//+/ }; do
    case $part in
      v5) echo MHC_STREAM=0 ;;                             # the v5 cluster kernel at large T
      nodecode) echo MHC_DECODE_MAX_T=0 ;;                 # small T on the large-T kernels
      tokenmajor) echo MHC_POST_TOKEN_MAJOR=1 ;;           # MhcPost's older grid order
      legacy|twopass|chunked) echo MHC_PREFILL=$part ;;    # legacy: the paths before issue 22
      nopdl) echo MHC_PREFILL_PDL=0 ;;
      hint*) echo MHC_PREFILL_HINTS=${part#hint} ;;
      pdl*) echo MHC_PREFILL_PDL=${part#pdl} ;;
      frac*) echo MHC_PREFILL_L2_FRAC=0.${part#frac} ;;
      kr*) echo MHC_PREFILL_KR=${part#kr} ;;
      tt*) echo MHC_PREFILL_TT=${part#tt} ;;
      ft*) echo MHC_PREFILL_FT=${part#ft} ;;
      # ilv, tma, coalesced, staged, l2f, rows, cl, diag, nocoef16, fin8, bulk, half:
      # switches of the patches in docs/journal/patches/ (measured and not merged, or not
      # yet measured; main's kernels ignore them), kept so that their runs repeat
      ilv*) echo MHC_PREFILL_ILV=${part#ilv} ;;
      tma*) echo MHC_PREFILL_TMA=${part#tma} ;;
      coalesced) echo MHC_V41_COALESCED_LOADS=1 ;;
      staged) echo MHC_V41_STAGED_STORES=1 ;;
      l2f*) echo MHC_V41_L2_FETCH=${part#l2f} ;;           # V4.1 stream tile loads: L2 fetch size (run 6)
      rows) echo MHC_V41_ROW_LOADS=1 ;;                    # V4.1 stream tile loads by whole rows (run 7)
      cl*) echo MHC_V41_CLUSTER=${part#cl} ;;              # V4.1 stream grid in clusters of splits (run 7)
      diag*) echo MHC_V41_DIAG=${part#diag} ;;             # V4.1 stream kernel parts skipped (run 8)
      nocoef16) echo MHC_V41_NOCOEF16=1 ;;                 # V4.1 stream: 4-byte coefficient copies (run 8)
      fin8) echo MHC_V41_FINISH8=1 ;;                      # V4.1 large-T finish: 8 tokens a block, one load batch (run 8)
      bulk*) echo MHC_V41_BULK=${part#bulk} ;;             # V4.1 stream kernel: bulk-copy loads (1), + stores (2) (run 9)
      half*) echo MHC_V41_HALF=${part#half} ;;             # V4.1 stream kernel: half-tile pipeline (1) or whole tiles (0) (run 10)
      fin16) echo MHC_V41_FINISH16=1 ;;                    # V4.1 large-T finish: run 2's 16 tokens a block (main, run 10)
      balanced) echo MHC_V41_BALANCE=1 ;;                  # V4.1: every SM (run 2)
      plainfirst) echo MHC_PDL_FIRST=0 ;;                  # first kernels launched plainly (run 4)
      noprefetch) echo MHC_DECODE_PREFETCH_MAX_BYTES=0 ;;  # decode mixes kernel: no input prefetch (run 5)
      onethread) echo MHC_SINKHORN_LANES=0 ;;              # V4.1 / decode finishes: Sinkhorn on one thread (run 6)
      groups*) echo MHC_V41_GROUPS=${part#groups} ;;       # V4.1 stream grid: token groups
      stages*) echo MHC_V41_STAGES=${part#stages} ;;       # V4.1 stream kernel: pipeline depth (2..6)
      base) echo "MHC_KERNELS_LIB=$root/.base/libmhc_kernels.so" ;;  # the baseline (prepare-base)
      lib*) echo "MHC_KERNELS_LIB=$root/.variants/${part#lib}.so" ;;  # a variant built here (.variants/NAME.so)
    esac                                                   # anything else: the default dispatch
  done
}
in_mode() {  # MODE CMD...: CMD (a step's function) with the mode's environment
  local kv
  kv=$(mode_env "$1")
  shift
  # shellcheck disable=SC2086
  [ -z "$kv" ] || setenv $kv
  "$@"
  for kv in $kv; do unset "${kv%%=*}"; done
}
smoke() {  # JOBS "mode:op T d [args]": a hang or a crash shows here in seconds
  local job
  for job in "$@"; do
    # shellcheck disable=SC2046,SC2086
    x env $(mode_env "${job%%:*}") timeout 60 python3 scripts/gpu/profile_kernel.py ${job#*:} 2>&1 \
      | tail -2 || { rc=1; echo "SMOKE FAILED: $job"; }
  done
}
bench() {  # MODE TAG OPS T-LIST EXTRA...: bench_kernels.py -> $out/TAG.json, TAG.txt
  local m=$1 tag=${2//+/_} ops=$3 tl=$4  # '+' is not a name the device tool returns
  shift 4
  # shellcheck disable=SC2046
  x env $(mode_env "$m") timeout "${BENCH_TIMEOUT:-240}" python3 benchmarks/bench_kernels.py \
    --ops "$ops" --no-compile --no-eager --t-list "$tl" "$@" --json "$out/$tag.json" \
    > "$out/$tag.txt" 2>&1 || rc=1
  echo "== $tag"
  show grep -E "^peer:|^[a-z_]+ +[0-9]|Error|error" "$out/$tag.txt" | cut -c1-150
}
boundary() {  # MODE TAG T-LIST: bench_boundary.py -> $out/TAG.json, TAG.txt
  # shellcheck disable=SC2046
  x env $(mode_env "$1") timeout 200 python3 benchmarks/bench_boundary.py --t-list "$3" \
    --json "$out/$2.json" > "$out/$2.txt" 2>&1 || rc=1
  echo "== $2"
  show grep -E "^d=" "$out/$2.txt"
}
kernel_tests() {  # the kernel tests, printing the rel err lines (TESTS, TESTS_K)
  # shellcheck disable=SC2086
  x timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -q -p no:cacheprovider -x -rP \
    ${TESTS:-tests/test_kernels.py} ${1:+-k "$1"} 2>&1 | tee "$out/tests.txt" \
    | grep -E "rel err vs|passed|failed|Error" | tail -40
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
}
ncu_job() {  # LOG TAG JOB SUMMARY NCU-ARGS...: ncu on one profile_kernel.py job, its report
  # appended to $out/LOG under a "######## TAG JOB" line, SUMMARY (a function) reading it
  local log=$1 tag=$2 job=$3 summary=$4
  shift 4
  echo "######## $tag $job" >> "$out/$log"
  # shellcheck disable=SC2086
  x timeout 120 ncu "$@" python3 scripts/gpu/profile_kernel.py $job > "$out/ncu.tmp" 2>&1 || rc=1
  cat "$out/ncu.tmp" >> "$out/$log"
  echo "== $tag $job"
  show "$summary" "$out/ncu.tmp"
  rm -f "$out/ncu.tmp"
}
sections_summary() {
  grep -E "^  [a-zA-Z_].*\(|^    (Duration|DRAM Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Issue Slots Busy|No Eligible)" "$1" | head -16
}
stalls_summary() {
  grep -E "^    (Duration|DRAM Throughput|Achieved Occupancy|dram__bytes)" "$1"
  grep -E "stalled_" "$1" | awk '{print $NF, $1}' | sort -rn | head -8
}
launches_summary() { awk '/^  [a-zA-Z_].*\(/{k=$2" "$3} /Duration/{print "   ", k, $NF, "us"}' "$1" | head -6; }
ncu_sections() {  # KERNEL SKIP COUNT JOB...: ncu's main sections of COUNT launches per job -> ncu.txt
  local kernel=$1 skip=$2 count=$3 job
  shift 3
  for job in "$@"; do
    ncu_job ncu.txt ncu "$job" sections_summary --section SpeedOfLight --section Occupancy \
      --section LaunchStats --section MemoryWorkloadAnalysis --section WarpStateStats \
      --section SchedulerStats -k "regex:$kernel" --launch-skip "$skip" --launch-count "$count"
  done
}
stalls() {  # KERNEL SKIP LOG JOB...: where the warps wait, per issued instruction, and
  # the launch's DRAM bytes (STALL_NCU_ARGS: more ncu options, e.g. --profile-from-start off)
  local kernel=$1 skip=$2 log=$3 job
  shift 3
  for job in "$@"; do
    # shellcheck disable=SC2086
    ncu_job "$log" stalls "$job" stalls_summary ${STALL_NCU_ARGS:-} --section SpeedOfLight \
      --section Occupancy -k "regex:$kernel" --launch-skip "$skip" --launch-count 1 --metrics \
      "dram__bytes_read.sum,dram__bytes_write.sum,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio"
  done
}
per_kernel() {  # JOB...: each launch's time in a small-T call (ncu serialises PDL chains)
  local job
  for job in "$@"; do
    ncu_job ncu.txt decode "$job --calls 6" launches_summary --section SpeedOfLight \
      -k regex:Kernel --launch-skip 2 --launch-count 4
  done
}
run_steps() {  # MODE STEP...: each step is the function MODE_STEP
  local step t1
  for step in "$@"; do
    t1=$(date +%s)
    if declare -F "${mode}_$step" >/dev/null; then "${mode}_$step"; else echo "unknown step $step"; rc=2; fi
    echo "step $step: $(( $(date +%s) - t1 )) s"
  done
}

# ---- stream: the kernel A/B benchmarks and profiles (issues 10, 11) -----------------------
stream_smoke() { smoke "stream:pre 4096 7168" "stream:head 4099 7168" "stream:post_pre 300 4096" \
                       "stream:post_head 517 1000" "stream:pre 300 64 --n 8"; }
stream_tests() { kernel_tests "${TESTS_K:-}"; }
stream_bench() {
  local m
  for m in ${MODES:-stream v5}; do bench "$m" "bench_$m" "${BENCH_OPS:-pre,head}" "${BENCH_T:-1,64,512,4096,16384}"; done
}
stream_boundary() {
  local m
  for m in ${MODES:-stream v5}; do boundary "$m" "boundary_$m" 1,8,64,512,4096,16384; done
}
stream_decode() { per_kernel "pre 1 7168" "pre 8 7168" "head 1 7168" "post_pre 1 7168" "post_head 1 7168"; }
stream_ncu() { ncu_sections "${NCU_KERNEL:-streamKernel}" 1 1 "pre 4096 7168" "post_pre 4096 7168" "head 4096 7168"; }
stream_peer() {  # ours next to FlashInfer 0.7.2 (carry ".peers": benchmarks/peers/flashinfer_mhc.py)
  x timeout 200 python3 -m pytest -q -p no:cacheprovider -rs -m peer tests/test_peer_flashinfer.py \
    > "$out/peer_test.txt" 2>&1 || rc=1
  show tail -3 "$out/peer_test.txt"
  BENCH_TIMEOUT=300 bench default bench_peer pre,post "${BENCH_T:-1,8,64,512,4096,16384}" --peer flashinfer
}
stream_post() {  # MhcPost: chunk-major grid (default) vs token-major, FlashInfer when carried
  local order
  for order in default tokenmajor; do
    BENCH_TIMEOUT=200 bench "$order" "post_$order" post "${BENCH_T:-1,8,64,512,4096,16384}"
  done
}
stream_model() {  # the whole-model mHC time, plain vs fused (issue 11)
  x timeout 240 python3 benchmarks/bench_model_mhc.py --json "$out/bench_model.json" \
    > "$out/bench_model.txt" 2>&1 || rc=1
  show tail -6 "$out/bench_model.txt"
}
stream_stalls() { stalls "${NCU_KERNEL:-streamKernel}" 1 ncu.txt "pre 4096 7168" "head 4096 7168"; }
stream_sass() {
  local f=$out/sass_pre_n4_gw4.txt
  x cuobjdump -sass "$MHC_KERNELS_LIB" > "$out/sass.tmp" 2>/dev/null
  show awk '/Function : _ZN3mhc12streamKernelILi4ELb0ELb0ELi4E/{f=1;next} /Function : /{f=0} f' \
    "$out/sass.tmp" > "$f"
  rm -f "$out/sass.tmp"
  echo "== sass pre n=4 gw=4: $(wc -l < "$f") lines"
  show grep -oE "(MEMBAR[A-Z.]*|UCGABAR[A-Z_.]*|CCTL[A-Z.]*|FENCE[A-Z.]*|BAR\.[A-Z.]*|SYNCS[A-Z.]*|LDGDEPBAR|DEPBAR[A-Z.]*|HMMA[A-Z0-9.]*|LDL|STL|LDSM[A-Z.0-9]*)" \
    "$f" | sort | uniq -c
}

# ---- prefill: the prefill paths (issue 22) ----------------------------------------------
prefill_smoke() { smoke "auto:pre 4099 7168" "auto:post_pre 4099 7168" "twopass:head 1000 4096" \
                        "chunked:pre 300 1024 --n 2"; }
prefill_tests() { kernel_tests "${TESTS_K:-prefill or v4_all_t or post_pre or deterministic or garbage or graph or streaming or fused_tiles}"; }
prefill_bench() {  # every path at the issue's sizes, the two-pass torch baseline beside the table's
  local m
  for m in ${MODES:-auto legacy twopass}; do
    if [ "$m" = auto ]; then
      BENCH_TIMEOUT=200 bench auto prefill_bench_auto pre,head "${BENCH_T:-1,64,512,4096,16384}"
    else
      BENCH_TIMEOUT=200 bench "$m" "prefill_bench_$m" "${MODE_OPS:-pre,head}" "${MODE_T:-512,4096,16384}" --no-twopass --peer none
    fi
  done
}
prefill_sweep() {  # chunked variants (l2 share, slices per CTA, tokens per CTA, PDL)
  local m
  for m in ${SWEEP:-nopdl frac20 frac45 kr2}; do
    BENCH_TIMEOUT=200 bench "$m" "prefill_bench_$m" "${SWEEP_OPS:-pre,head}" "${SWEEP_T:-512,4096,16384}" --no-twopass --peer none
  done
}
prefill_boundary() {
  local m
  for m in ${BOUNDARY_MODES:-auto legacy}; do boundary "$m" "prefill_boundary_$m" "${BOUNDARY_T:-1,64,512,4096,16384}"; done
}
prefill_ncu() {  # one call's DRAM and L2 bytes, summed over its launches (caches kept between them)
  local m=${NCU_METRICS:-dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sectors_srcunit_tex_op_read_lookup_hit.sum,gpu__time_duration.sum}
  local job bm op t f metrics
  for job in ${NCU_JOBS:-"auto:pre:4096" "twopass:pre:4096" "legacy:pre:4096" "auto:head:4096" "auto:post_pre:4096"}; do
    IFS=: read -r bm op t <<< "$job"
    f=$out/ncu_${bm}_${op}_$t.csv
    for metrics in "$m" "dram__bytes_read.sum,dram__bytes_write.sum,gpu__time_duration.sum"; do
      # shellcheck disable=SC2046
      x env $(mode_env "$bm") timeout 120 ncu --profile-from-start off --cache-control none \
        --metrics "$metrics" --csv python3 scripts/gpu/profile_kernel.py "$op" "$t" 7168 --calls 3 \
        --profile-call 2 > "$f" 2>&1 || rc=1
      { [ "$dry" = 1 ] || grep -q '"Metric Name"' "$f"; } && break  # else an unknown L2 metric: DRAM alone
    done
    show python3 scripts/gpu/ncu_bytes.py "$f" "$bm $op T=$t d=7168"
  done
}
prefill_stalls() {  # the projection launch (a call's first) at T=4096 d=7168, per mode
  local m
  for m in ${STALL_MODES:-twopass}; do
    STALL_NCU_ARGS="--profile-from-start off --cache-control none" in_mode "$m" \
      stalls prefillKernel 0 "stalls_${m//+/_}.txt" "pre 4096 7168 --calls 3 --profile-call 2"
  done
}

# ---- v41: DeepSeek-V4.1 kernels and plugins (issue 23) ----------------------------------
v41_build() {
  if [ -d "$root/.trt_headers/tensorrt-11.1" ]; then build plugins; else build kernels; fi
  registers v41StreamKernel
}
junit_tests() {  # NAME TIMEOUT PYTEST ARGS...: -> $out/NAME.txt, NAME.xml
  local name=$1 limit=$2
  shift 2
  x timeout "$limit" python3 -m pytest -q -p no:cacheprovider -rs "$@" \
    --junitxml="$out/$name.xml" > "$out/$name.txt" 2>&1 || rc=1
  show tail -15 "$out/$name.txt"
}
v41_tests() { junit_tests tests "${TEST_TIMEOUT:-240}" tests/test_kernels_v41.py ${TEST_K:+-k "$TEST_K"}; }
v41_quicktests() {  # short device windows: the V4.1 kernels and V4's decode chain only
  junit_tests quicktests "${TEST_TIMEOUT:-200}" tests/test_kernels_v41.py tests/test_kernels.py \
    -k "v41 or decode or graph or written or pdl or post_mix or mix or collapse"
}
v41_alltests() {  # every GPU test of the kernels and the plugin harness, gated (not the HF ones)
  setenv MHC_TRT_HEADERS="$root/.trt_headers"
  gated_pytest "$MIN_KERNEL_PLUGIN" gpu "${TEST_TIMEOUT:-300}" tests/test_kernels.py \
    tests/test_kernels_v41.py tests/test_kernels_attributes.py tests/test_plugin_harness.py
}
v41_kerneltests() {  # every kernel GPU test (no plugin build needed: a carried kernel library works)
  gated_pytest "$MIN_KERNEL_FILES" gpu "${TEST_TIMEOUT:-240}" tests/test_kernels.py \
    tests/test_kernels_v41.py tests/test_kernels_attributes.py
}
v41_harness() {
  setenv MHC_TRT_HEADERS="$root/.trt_headers"
  junit_tests harness "${HARNESS_TIMEOUT:-200}" tests/test_plugin_harness.py -k "mix or collapse"
}
v41_bench() {  # the default, then each mode of V41_MODES (mode_env parts) in the same run
  local m tl
  for m in default ${V41_MODES:-balanced}; do
    tl=${BENCH_T:-1,8,64,512,4096,16384}
    [ "$m" = default ] || { echo "== $m: $(mode_env "$m" | tr '\n' ' ')"; tl=${V41_MODE_T:-$tl}; }
    # shellcheck disable=SC2046
    x env $(mode_env "$m") timeout "${BENCH_TIMEOUT:-240}" python3 benchmarks/bench_v41.py \
      --t-list "$tl" --d-list "${BENCH_D:-5120,7168}" \
      --json "$out/bench_v41_${V41_TAG:-}${m//+/_}.json" 2>&1 | tee "$out/bench_${V41_TAG:-}${m//+/_}.txt"
    [ "${PIPESTATUS[0]}" = 0 ] || rc=1
  done
}
v41_probe() {  # copy-only kernels of the stream kernel's access shapes (benchmarks/probes/)
  x nvcc -O3 -arch=sm_90 -std=c++17 -I native/kernels -o "$out/probe" benchmarks/probes/v41_access_probe.cu \
    > "$out/probe_build.txt" 2>&1 || { rc=1; tail -5 "$out/probe_build.txt"; return; }
  x timeout "${PROBE_TIMEOUT:-180}" "$out/probe" "$out/probe_v41.json" 2>&1 | tee "$out/probe_v41.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
  x rm -f "$out/probe"
}
v41_fuzz() {  # every op, V4 and V4.1, on the CUDA kernels against float64
  x timeout "${FUZZ_TIMEOUT:-120}" python3 scripts/qa/fuzz.py --gpu --only kernels \
    --count "${FUZZ_COUNT:-40}" --seed "${FUZZ_SEED:-23}" --json "$out/fuzz.json" \
    > "$out/fuzz.txt" 2>&1 || rc=1
  show tail -8 "$out/fuzz.txt"
}
v41_decode() { per_kernel "post_mix 1 5120" "post_mix 1 7168" "post_pre 1 5120"; }
v41_phases() {  # a debug kernel build with phase clocks (build/phases), then where a T=1
  # chain's time goes inside its kernels (scripts/gpu/phase_clocks.py; PHASES_T, default 1)
  build phases
  x env "MHC_KERNELS_LIB=$root/build/phases/kernels/libmhc_kernels.so" timeout 120 \
    python3 scripts/gpu/phase_clocks.py --t "${PHASES_T:-1}" --json "$out/phases.json" \
    > "$out/phases.txt" 2>&1 || rc=1
  show cat "$out/phases.txt"
}
v41_ab() {  # the default against each of AB_MODES (default: base, the library prepare-base
  # put in .base/), same run: V4.1 (bench_v41) and, unless AB_V4=0, V4's decode chains
  # (MhcPre, MhcHead at T <= 64)
  local m modes=${AB_MODES:-base}
  if [[ " $modes " == *" base "* ]] && [ "$dry" != 1 ] && [ ! -f "$root/.base/libmhc_kernels.so" ]; then
    echo "no .base/libmhc_kernels.so (scripts/gpu/run.sh prepare-base makes it; carry .base)"; rc=1; return
  fi
  V41_MODES=$modes v41_bench
  [ "${AB_V4:-1}" = 1 ] || return 0
  for m in default $modes; do
    # shellcheck disable=SC2046
    x env $(mode_env "$m") timeout "${BENCH_TIMEOUT:-240}" python3 benchmarks/bench_kernels.py \
      --no-compile --no-eager --no-twopass --peer none --ops pre,head --t-list 1,8,64 \
      --json "$out/bench_kernels_$m.json" > "$out/bench_kernels_$m.txt" 2>&1 || rc=1
    show tail -12 "$out/bench_kernels_$m.txt"
  done
}
v41_pdl() { AB_MODES=plainfirst AB_V4=${PDL_V4:-1} v41_ab; }  # run 4: first kernels with PDL or plain
v41_groups() {  # how many token groups (CTAs pulling memory) the stream grid takes, d=5120
  V41_TAG=groups_ BENCH_D=5120 V41_MODE_T=${V41_MODE_T:-512,4096,16384} V41_MODES=${V41_MODES:-groups4 groups5} \
    BENCH_T=${V41_MODE_T:-512,4096,16384} v41_bench
}
v41_l2fetch() {  # the stream kernel's tile loads with an L2 fetch-size hint (run 6's patch), both widths
  V41_TAG=l2f_ V41_MODE_T=${V41_MODE_T:-512,4096,16384} V41_MODES=${V41_MODES:-l2f128 l2f256} \
    BENCH_T=${V41_MODE_T:-512,4096,16384} v41_bench
}
clocks_summary() { grep -E "gpu__time_duration|cycles_elapsed.avg.per_second|dram__|inst_executed|issue_active" "$1"; }
v41_clocks() {  # the stream kernel under ncu at base and at free clocks (CLOCK_JOBS, CLOCK_MODES:
  # mode_env parts): if its time follows the SM clock it is issue/latency-bound, if not the
  # memory system bounds it; plus its DRAM bytes, instructions and issue activity
  local m cc job jobs=()
  mapfile -t jobs <<< "${CLOCK_JOBS:-post_mix 4096 5120
mix 4096 5120}"
  for m in ${CLOCK_MODES:-default}; do
    for job in "${jobs[@]}"; do
      for cc in base none; do
        in_mode "$m" ncu_job "clocks_${m//+/_}.txt" "$m clocks=$cc" "$job" clocks_summary \
          --clock-control "$cc" -k regex:v41StreamKernel --launch-skip 2 --launch-count 1 \
          --metrics "gpu__time_duration.sum,sm__cycles_elapsed.avg.per_second,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active"
      done
    done
  done
}
v41_pcstalls() {  # where the stream kernel's warps wait, per SASS instruction: ncu's PC sampling
  # (SourceCounters) exported as the source page's CSV, summed by scripts/gpu/pc_stalls.py.
  # PCS_JOBS (default post_mix 4096 5120), PCS_MODES (mode_env parts; default: default)
  local m job k rep jobs=()
  mapfile -t jobs <<< "${PCS_JOBS:-post_mix 4096 5120}"
  for m in ${PCS_MODES:-default}; do
    k=0
    for job in "${jobs[@]}"; do
      k=$((k + 1))
      rep="$out/pcs_${m//+/_}_$k"
      echo "== pcstalls $m $job"
      # shellcheck disable=SC2046,SC2086
      x env $(mode_env "$m") timeout 240 ncu -f -o "$rep" --section SourceCounters \
        --section WarpStateStats --section SpeedOfLight --section ComputeWorkloadAnalysis \
        --section MemoryWorkloadAnalysis -k regex:v41StreamKernel --launch-skip 2 --launch-count 1 \
        python3 scripts/gpu/profile_kernel.py $job > "$rep.log" 2>&1 || { rc=1; tail -5 "$rep.log"; }
      x sh -c "ncu -i '$rep.ncu-rep' --page source --csv --print-source sass > '$rep.csv' 2>&1" || rc=1
      x sh -c "ncu -i '$rep.ncu-rep' --page details > '$rep.details.txt' 2>&1" || rc=1
      show grep -E "Duration|SM Frequency|Throughput|Busy|Issue Slots|Pipe|Bank|Warp Cycles|Eligible" \
        "$rep.details.txt" | head -"${PCS_DETAIL_LINES:-24}"
      x python3 scripts/gpu/pc_stalls.py "$rep.csv" --top "${PCS_TOP:-40}" > "$rep.txt" 2>&1 || rc=1
      show head -"${PCS_LINES:-45}" "$rep.txt"
      rm -f "$rep.ncu-rep"
    done
  done
}
v41_sass() {  # the SASS of the kernels whose mangled names match SASS_FUNCS (substrings,
  # space-separated; default: V4.1's stream kernel and decode finish at bf16, n=4) -> sass_K.txt
  local f k=0
  x cuobjdump -sass "${MHC_KERNELS_LIB:-$KLIB}" > "$out/sass.tmp" 2>/dev/null || rc=1
  for f in ${SASS_FUNCS:-15v41StreamKernelILi4ELb1E 15v41FinishKernelI13__nv_bfloat16Li4E}; do
    k=$((k + 1))
    show awk -v f="$f" '/Function : / {p = index($0, f) > 0} p' \
      "$out/sass.tmp" > "$out/sass_$k.txt"
    echo "== sass $f: $(wc -l < "$out/sass_$k.txt") lines"
  done
  rm -f "$out/sass.tmp"
}
v41_imix() {  # the stream kernel's executed instructions by opcode (ncu InstructionStats), T=4096 d=5120
  local job
  for job in ${IMIX_OPS:-post_mix}; do
    ncu_job imix.txt imix "$job 4096 5120" imix_summary --section InstructionStats \
      --print-details all -k regex:v41StreamKernel --launch-skip 2 --launch-count 1
  done
}
imix_summary() { grep -E "Executed Instructions|Issued Instructions|^ +[A-Z][A-Z0-9.]+ +[0-9,]+$" "$1" | head -60; }
v41_stalls() {  # the default and each of V41_STALL_MODES at T=4096 d=5120
  local m
  for m in default ${V41_STALL_MODES:-}; do
    in_mode "$m" stalls v41StreamKernel 2 "stalls_${m//+/_}.txt" "post_mix ${V41_STALL_T:-4096} 5120"
  done
}
v41_ncu() {
  local jobs=()
  mapfile -t jobs <<< "${NCU_JOBS:-post_mix 4096 5120
post_mix 512 5120}"
  ncu_sections "${NCU_KERNEL:-v41}" 2 2 "${jobs[@]}"
}

# ---- gate: every benchmark driver once, short lists (GATE_BENCH=1) ---------------------
gate_bench() {  # each driver runs and writes its JSON: the benchmarks still work end to end
  local cmd
  for cmd in "bench_kernels.py --no-compile --t-list 1,4096" "bench_boundary.py --t-list 1,4096" \
             "bench_v41.py --t-list 1,4096 --d-list 7168" "bench_model_mhc.py --t-list 1,4096" \
             "bench_hf_layers.py --compile none --budget-s 30"; do
    # shellcheck disable=SC2086
    x timeout 120 python3 benchmarks/$cmd --json "$out/gate_${cmd%%.py*}.json" \
      > "$out/gate_${cmd%%.py*}.txt" 2>&1 || { rc=1; echo "BENCH FAILED: $cmd"; }
    echo "== ${cmd%% *}: $(show tail -1 "$out/gate_${cmd%%.py*}.txt" | cut -c1-120)"
  done
}

archive_out() {  # the device tool returns at most 8 files a call: more become one MODE_run.tgz
  local tgz
  [ "$(find "$out" -type f | wc -l)" -gt 8 ] || return 0
  tgz=$(mktemp "/tmp/${mode}_run.XXXXXX.tgz")
  tar czf "$tgz" -C "$out" . && find "$out" -mindepth 1 -delete && mv "$tgz" "$out/${mode}_run.tgz"
}

# ---- the modes --------------------------------------------------------------------------
ignore_here() {  # PATTERN...: git-ignored in this clone only (info/exclude), once each
  local exclude v
  exclude="$(git rev-parse --git-common-dir)/info/exclude"
  for v in "$@"; do
    grep -qx "$v" "$exclude" 2>/dev/null || x sh -c "echo $v >> '$exclude'"
  done
}

prepare() {  # here: what the device calls carry, git-ignored through info/exclude
  local src=${MHC_TRT_HEADERS:-$root/../shared/third_party} v pkg ver
  x mkdir -p .trt_headers .wheels
  ignore_here /.trt_headers/ /.wheels/
  for v in 10.16 11.1; do  # the TensorRT headers (.trt_headers)
    x rm -rf ".trt_headers/tensorrt-$v"
    x cp -r "$src/tensorrt-$v" ".trt_headers/tensorrt-$v"
  done
  # transformers as pinned here, and the huggingface-hub line it requires (the GPU
  # machine has 5.17 with huggingface-hub 1.x): carried as wheels (.wheels).
  for pkg in transformers huggingface_hub httpx2 httpcore2 truststore click hf-xet; do
    ver=$(.venv/bin/python -m pip show "$pkg" 2>/dev/null | sed -n 's/^Version: //p')
    [ -z "$ver" ] || x .venv/bin/python -m pip download -q --no-deps --only-binary=:all: \
      --platform manylinux_2_17_x86_64 --python-version 3.12 -d .wheels "$pkg==$ver"
  done
  show du -sh .trt_headers .wheels
}

prepare_base() {  # here: REF's kernel library (default main), built by this machine's nvcc,
  # into .base/ (git-ignored) for the A/B step `v41 ab` (device tool: carry ".base")
  local ref=${1:-main} tmp
  tmp=$(mktemp -d)
  ignore_here /.base/ /.variants/
  x git worktree add -q --detach "$tmp/src" "$ref" || exit 1
  x env "MHC_CUDA_ARCHS=${MHC_CUDA_ARCHS:-90}" bash "$tmp/src/scripts/dev/build_plugins.sh" \
    "$tmp/build" -DMHC_BUILD_TRT_PLUGINS=OFF > "$tmp/build.txt" 2>&1 \
    || { tail -20 "$tmp/build.txt"; echo "BUILD FAILED"; exit 1; }
  x mkdir -p .base
  x cp "$tmp/build/kernels/libmhc_kernels.so" .base/
  x sh -c "git rev-parse '$ref' > .base/REF"
  x git worktree remove --force "$tmp/src"
  rm -rf "$tmp"
  echo ".base/: the kernels of $ref"
}

case $mode in
  prepare) prepare; exit 0 ;;
  prepare-base) prepare_base "$@"; exit 0 ;;
  gate|kernels|stream|fuzz|hf|prefill|v41) ;;
  *) echo "usage: scripts/gpu/run.sh [--dry-run] prepare|prepare-base|gate|kernels|stream|fuzz|hf|prefill|v41 [ARGS...]" >&2
     exit 2 ;;
esac
out=${OUT:-$root/out/gpu_$mode}
mkdir -p "$out"
setenv PYTHONUNBUFFERED=1 "PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}"
case $mode in
  gate)
    install_wheels optional
    print_env
    # GATE_BUILD=plugins: the TensorRT 11 build alone (no 10.16 set, no example), when
    # device time is short; the 10.16 tests then fail the gate by name.
    build "${GATE_BUILD:-ci}"
    show tail -1 "$out/build.txt"
    require_gpu
    setenv MHC_TRT_HEADERS="$root/.trt_headers"
    # The GPU tests (marker gpu) that must all run and pass; the floor catches a module
    # that stopped collecting (tests/builds.py, docs/TESTING.md).
    gated_pytest "$MIN_GATE" gpu "${TEST_TIMEOUT:-480}" "$@"
    [ "${GATE_BENCH:-0}" = 1 ] && gate_bench ;;
  kernels)
    print_env
    build kernels
    require_gpu
    tests=(tests/test_kernels.py tests/test_kernels_v41.py tests/test_kernels_attributes.py
           tests/test_kernels_lib.py)
    marks=gpu
    if [ -d "$root/.peers/flashinfer/site/flashinfer" ] || [ -n "${MHC_FLASHINFER_BUNDLE:-}" ]; then
      peer=1
      tests+=(tests/test_peer_flashinfer.py)
      marks="gpu or peer"
    fi
    gated_pytest "$MIN_KERNELS" "$marks" "${TEST_TIMEOUT:-300}" "${tests[@]}"
    x timeout "${BENCH_TIMEOUT:-360}" python3 benchmarks/bench_kernels.py --json "$out/bench_kernels.json" \
      "$@" 2>&1 | tee "$out/bench.txt" | tail -80
    [ "${PIPESTATUS[0]}" = 0 ] || rc=1
    if [ -n "${peer:-}" ] && [ "$dry" != 1 ] && grep -q '^peer: unavailable' "$out/bench.txt"; then
      echo "PEER NOT TIMED: $(grep '^peer:' "$out/bench.txt")"; rc=1
    fi ;;
  stream)
    print_env
    build kernels
    registers streamKernel
    require_gpu
    [ $# -gt 0 ] || set -- smoke bench ncu tests boundary
    run_steps "$@" ;;
  fuzz)
    print_env
    build plugins  # incremental: CMake reuses a warm machine's earlier build
    setenv MHC_KERNELS_LIB="$KLIB"
    x python3 scripts/qa/fuzz.py --gpu --only kernels,plugin --count "${1:-1000}" --seed "${2:-7}" \
      --harness-every "${HARNESS_EVERY:-4}" --json "$out/fuzz_gpu.json" 2>&1 | tee "$out/fuzz_gpu.txt"
    rc=${PIPESTATUS[0]} ;;
  hf)
    install_wheels required
    print_env
    build kernels
    require_gpu
    gated_pytest 4 gpu "${TEST_TIMEOUT:-120}" tests/test_hf_gpu.py
    x timeout "${BENCH_TIMEOUT:-200}" python3 benchmarks/bench_hf_layers.py --json "$out/bench_hf.json" \
      "$@" 2>&1 | tee "$out/bench.txt" | tail -30
    [ "${PIPESTATUS[0]}" = 0 ] || rc=1 ;;
  prefill)
    print_env
    build kernels  # incremental, as above
    require_gpu
    [ $# -gt 0 ] || set -- smoke tests bench boundary ncu
    run_steps "$@" ;;
  v41)
    print_env
    require_gpu
    [ $# -gt 0 ] || set -- build tests bench ncu
    run_steps "$@" ;;
esac
x archive_out
exit $rc
