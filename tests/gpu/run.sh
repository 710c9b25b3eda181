#!/usr/bin/env bash
# tests/gpu/run.sh: the one device script (docs/gpu_run.md). GPU time is rare and short, so it
# runs in phases ordered by value, each under its own time limit, each writing its results under
# $OUT the moment it ends, and the whole inside LOOM_GPU_TOTAL (420 s) of the device tool's 600:
#   setup          unpack .deps/gpu-prefix.tar.gz (scripts/gpu_deps.sh), configure a GPU-only
#                  build (LOOM_GPU_ONLY, sm_90a)
#   build          loom, the gpu tests, all cores, keep going past a failed target
#   tests          (a) every gpu-labelled test, attention's LongSequencesGpu among them
#   bench_kernels  (b) loom bench kernels
#   bench_train    (c) loom bench train on GPT-2 124M shapes (B=16, T=1024), with its MFU
#   peers          (d) the PyTorch peers (tests/gpu/peers.py)
#   sass           (e) no local memory in the kernels, tensor cores in attention (sass_check.py)
# A phase that fails or runs out of time leaves the others' results; a phase that needs the
# build runs on whatever the build made. At most 8 files come back from $OUT: the 7 below and
# extra.log, into which anything else found there is folded. The output ends with the phase
# table; its last line is the table's last row.
#
# Without a device (tests/gpu/rehearse.sh) the GPU phases say "no device" and skip; setup,
# build and sass run as they would there.
#
# Knobs (environment):
#   OUT                  results folder (default /tmp/loom-gpu)
#   LOOM_GPU_PHASES      phases to run, in order (default: all); e.g. "tests bench_kernels" for
#                        a second call on a warm machine, whose build-gpu/ is still there
#   LOOM_GPU_TOTAL       seconds for the whole script (default 420)
#   LOOM_GPU_LIMIT_<phase>  one phase's limit in seconds (default: the plan below)
#   LOOM_GPU_JOBS        build jobs (default: all cores); LOOM_GPU_BUILD_DIR (default build-gpu)
#   LOOM_GPU_COMMIT      the commit to record when .git did not travel
#   LOOM_GPU_CMAKE_ARGS  more configure arguments (the rehearsal's step timer)
#   LOOM_GPU_NO_DEVICE=1 behave as on a machine without a GPU
#   LOOM_GPU_RUN_DRY=1   no build and no GPU: every phase is a stand-in that prints what the real
#                        one would summarise (tests/gpu/run_test.sh checks the script this way);
#                        LOOM_GPU_DRY_SLEEP_<phase>, LOOM_GPU_DRY_RC_<phase> and
#                        LOOM_GPU_DRY_STRAY_<phase> (files it drops into $OUT) shape a stand-in
#   tests/gpu/run.sh --plan   prints the phases and their limits, runs nothing
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

PHASES_ALL=(setup build tests bench_kernels bench_train peers sass)
# The plan: seconds per phase on the GPU machine (16 cores, one H200). tests/gpu/rehearse.sh
# measures the build here and checks that the plan holds; docs/gpu_run.md explains each number.
declare -A PLAN=([setup]=40 [build]=90 [tests]=60 [bench_kernels]=115 [bench_train]=45 [peers]=45 [sass]=15)
declare -A FILE=([setup]=build.log [build]=build.log [tests]=tests.log [bench_kernels]=bench_kernels.txt
                 [bench_train]=bench_train.txt [peers]=peers.txt [sass]=sass.txt)
RESERVE=10  # seconds kept back for the digest and the table
KEEP=(summary.md build.log tests.log bench_kernels.txt bench_train.txt peers.txt sass.txt extra.log)

if [[ ${1:-} == --plan ]]; then
  total=0
  for p in "${PHASES_ALL[@]}"; do
    echo "$p ${PLAN[$p]}"
    total=$((total + PLAN[$p]))
  done
  echo "reserve $RESERVE"
  echo "total $((total + RESERVE))"
  exit 0
fi

export OUT=${OUT:-/tmp/loom-gpu}
mkdir -p "$OUT"
export LOOM_ROOT=$PWD
export BUILD=${LOOM_GPU_BUILD_DIR:-build-gpu}
export JOBS=${LOOM_GPU_JOBS:-$(nproc)}
export DRY=${LOOM_GPU_RUN_DRY:-0}
TOTAL=${LOOM_GPU_TOTAL:-420}
read -r -a PHASES <<< "${LOOM_GPU_PHASES:-${PHASES_ALL[*]}}"
T0=$(date +%s)
WORK=$(mktemp -d /tmp/loom-gpu-run.XXXXXX)
export WORK
trap 'rm -rf "$WORK"' EXIT
trap 'exit 143' TERM INT
elapsed() { echo $(($(date +%s) - T0)); }
say() { echo "[run.sh $(elapsed)s] $*"; }
# Table cells: one line, no '|', at most 90 characters.
cell() { tr '\n|' ' /' | sed 's/  */ /g; s/^ //; s/ $//' | cut -c1-90; }

# ---- what the phases need -----------------------------------------------------------------
export COMMIT=${LOOM_GPU_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
# The loader path as the machine set it (its driver may live there): what Python runs under.
export ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
DEVICE=""
if [[ $DRY == 1 ]]; then
  DEVICE="dry run"
elif [[ -z ${LOOM_GPU_NO_DEVICE:-} ]] && command -v nvidia-smi >/dev/null; then
  DEVICE=$(timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
fi
export DEVICE
if [[ $DRY != 1 ]]; then
  # nvcc where CUDA installs it, when the PATH lacks it.
  if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
    export PATH="/usr/local/cuda/bin:$PATH"
  fi
  # The build dependencies that travel with the tree (scripts/gpu_deps.sh): CMake finds them
  # through the prefix, the loader through LD_LIBRARY_PATH (OpenBLAS needs libgfortran, which no
  # binary names directly). Python runs with the machine's own path.
  export DEPS_TAR=$LOOM_ROOT/.deps/gpu-prefix.tar.gz
  export DEPS=${LOOM_GPU_DEPS_ROOT:-/tmp/loom-deps}
  if [[ -f $DEPS_TAR ]]; then
    lib=$DEPS/usr/lib/x86_64-linux-gnu
    export CMAKE_PREFIX_PATH="$DEPS/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
    export LD_LIBRARY_PATH="$lib/openblas-openmp:$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
fi

# ---- the phases: each prints to its file in $OUT; 77 = skipped ----------------------------
phase_setup() {
  echo "gpu: ${DEVICE:-none}; commit $COMMIT; $(nproc) cores; $(date -u +%FT%TZ)"
  nvcc --version | grep -i release
  cmake --version | head -1
  g++ --version | head -1
  local args=()
  if [[ -f $DEPS_TAR ]]; then
    mkdir -p "$DEPS" && tar -xzf "$DEPS_TAR" -C "$DEPS" || return 1
    cat "$DEPS/usr/LOOM_GPU_DEPS.txt"
    local lib=$DEPS/usr/lib/x86_64-linux-gnu
    args=(-DGTest_DIR="$lib/cmake/GTest" -Dtomlplusplus_DIR="$lib/cmake/tomlplusplus"
          -DCMAKE_INCLUDE_PATH="$DEPS/usr/include;$DEPS/usr/include/x86_64-linux-gnu/openblas-openmp"
          -DCMAKE_LIBRARY_PATH="$lib/openblas-openmp;$lib")
  else
    echo "no .deps/gpu-prefix.tar.gz (scripts/gpu_deps.sh): the build relies on this machine's packages"
  fi
  local extra=()
  read -r -a extra <<< "${LOOM_GPU_CMAKE_ARGS:-}"
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOOM_GPU_ONLY=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
    "${args[@]}" "${extra[@]}"
}

phase_build() {
  [[ -f $BUILD/build.ninja ]] || { echo "no configured build in $BUILD"; return 1; }
  # -k 0: a target that fails leaves the others to build, and the phases after use what built.
  cmake --build "$BUILD" -j "$JOBS" -- -k 0
}

phase_tests() {
  [[ -f $BUILD/CTestTestfile.cmake ]] || { echo "no build"; return 1; }
  # Several test processes share the GPU; each keeps OpenBLAS (its CPU reference) to 2 threads.
  (cd "$BUILD" && OMP_NUM_THREADS=2 ctest -L gpu -j 8 --timeout 120 --no-tests=error --output-on-failure) || return
  [[ -n $DEVICE ]] || return 77
}

phase_bench_kernels() {
  [[ -x $BUILD/loom ]] || { echo "no loom binary"; return 1; }
  if [[ -z $DEVICE ]]; then "$BUILD/loom" bench kernels --help >/dev/null && echo "no device" && return 77; return 1; fi
  "$BUILD/loom" bench kernels
}

phase_bench_train() {
  [[ -x $BUILD/loom ]] || { echo "no loom binary"; return 1; }
  if [[ -z $DEVICE ]]; then "$BUILD/loom" bench train --help >/dev/null && echo "no device" && return 77; return 1; fi
  "$BUILD/loom" bench train --device cuda --model gpt --n-layer 12 --d-model 768 --n-head 12 --seq-len 1024 \
    --vocab 50304 --batch 16 --warmup 3 --steps 10
}

phase_peers() {
  LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH PYTHONUNBUFFERED=1 python3 tests/gpu/peers.py
}

phase_sass() {
  LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH python3 tests/gpu/sass_check.py --build "$BUILD" --log "$OUT/build.log"
}

# A stand-in for a phase (LOOM_GPU_RUN_DRY=1): the lines its summary reads, then the stray files,
# sleep and exit status the test asks for.
phase_dry() {
  local p=$1 v
  echo "dry run: phase $p"
  case $p in
    build) echo "[3/3] Linking CXX executable loom" ;;
    tests) echo "100% tests passed, 0 tests failed out of 3"
           echo "  1/3 Test  #1: attention_gpu_test.AttentionFwd.LongSequencesGpu ...   Passed    1.00 sec" ;;
    bench_train) echo "median 100.0 ms/step over 10 steps (after 3 warm-up) | MFU 50.0% of 989 TFLOP/s (dry)" ;;
    peers) echo "torch GPT-2 124M step B16 T1024 (eager, bf16 autocast): 1.0 ms, MFU 50.0% (dry)" ;;
    sass) echo "sass: 0 kernels (dry): local memory in 0; tensor cores in 0/0 attention kernels" ;;
  esac
  v=LOOM_GPU_DRY_STRAY_$p
  for ((i = 0; i < ${!v:-0}; i++)); do echo "stray $i" > "$OUT/stray_${p}_$i.txt"; done
  v=LOOM_GPU_DRY_SLEEP_$p; sleep "${!v:-0}"
  v=LOOM_GPU_DRY_RC_$p; return "${!v:-0}"
}
export -f phase_setup phase_build phase_tests phase_bench_kernels phase_bench_train phase_peers phase_sass phase_dry

# One line of result per phase, read from its file.
result_of() {
  local p=$1 f=$OUT/${FILE[$1]}
  case $p in
    setup) if grep -q "Build files have been written" "$f"; then echo "${DEVICE:-no device}; configured"
           else grep -m1 -iE "error" "$f" || echo "${DEVICE:-no device}"; fi ;;
    build) local last; last=$(grep -oE '^\[[0-9]+/[0-9]+\]' "$f" | tail -1)
           echo "steps ${last:-none}; $(grep -cE 'error:|FAILED:' "$f") errors" ;;
    tests) local s; s=$(grep -E "tests passed|tests failed" "$f" | tail -1)
           echo "${s:-no summary}; skipped $(grep -cE '\(Skipped\)$' "$f");" \
                "LongSequencesGpu $(grep -E 'Test +#[0-9]+: .*LongSequencesGpu' "$f" | grep -oE 'Passed|Failed|Skipped|Not Run|Timeout' | sort | uniq -c | tr -s ' ' | tr '\n' ' ')" ;;
    bench_kernels) echo "$(grep -cE '[0-9]' "$f") lines; $(grep -m1 -iE 'copy|ceiling' "$f")" ;;
    bench_train) grep -m1 -iE "MFU" "$f" || grep -m1 -E "median" "$f" || echo "no median" ;;
    peers) echo "$(grep -cE 'ms' "$f") timings; $(grep -m1 -E 'GPT-2' "$f" | grep -oE 'MFU [0-9.]+%' )" ;;
    sass) grep -E "^sass:" "$f" | tail -1 ;;
  esac
}

# Everything in $OUT but the files above goes into extra.log, so no more than 8 come back.
tidy_out() {
  local f base
  while IFS= read -r -d '' f; do
    base=${f#"$OUT"/}
    [[ " ${KEEP[*]} " == *" $base "* ]] && continue
    { echo "==== $base"; cat "$f"; } >> "$OUT/extra.log" 2>/dev/null
    rm -f "$f"
  done < <(find "$OUT" -mindepth 1 -type f -print0)
  find "$OUT" -mindepth 1 -depth -type d -empty -delete 2>/dev/null
  find "$OUT" -mindepth 1 ! -type f ! -type d -delete 2>/dev/null  # links, pipes: nothing comes back of them
}

ROWS=()
declare -A STATUS=()
run_phase() {
  local p=$1 limit left start rc status secs cpu res
  limit=${PLAN[$p]}
  local v=LOOM_GPU_LIMIT_$p
  [[ -n ${!v:-} ]] && limit=${!v}
  left=$((TOTAL - RESERVE - $(elapsed)))
  ((limit > left)) && limit=$left
  if ((left < 3)); then
    STATUS[$p]="no time"
    ROWS+=("| $p | no time | 0 | 0 | - | $(elapsed) s of $TOTAL s used |")
    echo "${ROWS[-1]}" >> "$OUT/summary.md"
    say "$p: no time left"
    return
  fi
  say "$p: started (limit $limit s)"
  echo "==== phase $p: limit $limit s, at $(elapsed) s" >> "$OUT/${FILE[$p]}"
  start=$(date +%s)
  local cmd="phase_$p"
  [[ $DRY == 1 ]] && cmd="phase_dry $p"
  # times: the CPU seconds of the phase and everything it waited for, for the budget table.
  timeout -k 5 "$limit" bash -c "$cmd; rc=\$?; times > \"\$WORK/cpu_$p\"; exit \$rc" >> "$OUT/${FILE[$p]}" 2>&1
  rc=$?
  secs=$(($(date +%s) - start))
  case $rc in
    0) status=ok ;;
    77) status=skip ;;
    124 | 137) status=timeout ;;
    *) status="FAIL rc $rc" ;;
  esac
  [[ $status == skip && -z $DEVICE && $p =~ ^(tests|bench_kernels|bench_train|peers)$ ]] && status="skip (no device)"
  cpu=$(awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.0f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' \
        "$WORK/cpu_$p" 2>/dev/null)
  res=$(result_of "$p" 2>/dev/null | cell)
  STATUS[$p]=$status
  ROWS+=("| $p | $status | $limit | $secs | ${cpu:--} | $res |")
  echo "==== phase $p: $status after $secs s" >> "$OUT/${FILE[$p]}"
  echo "${ROWS[-1]}" >> "$OUT/summary.md"
  tidy_out
  say "$p: $status in $secs s"
}

{
  echo "# loom GPU run: ${DEVICE:-no device}, commit $COMMIT, $(date -u +%FT%TZ)"
  echo "| phase | status | limit s | used s | cpu s | result |"
  echo "|---|---|---|---|---|---|"
} >> "$OUT/summary.md"
say "gpu: ${DEVICE:-none}; commit $COMMIT; phases: ${PHASES[*]}; budget $TOTAL s"
for p in "${PHASES[@]}"; do
  [[ -n ${PLAN[$p]:-} ]] || { say "unknown phase '$p' (known: ${PHASES_ALL[*]})"; continue; }
  run_phase "$p"
done

# ---- the digest, then the table last --------------------------------------------------------
section() { [[ -s $OUT/$2 ]] && { echo "---- $1"; grep -v '^==== phase' "$OUT/$2" | eval "$3"; }; }
echo
echo "==================== loom on ${DEVICE:-no device}, commit $COMMIT ===================="
section "tests: failures" tests.log "grep -E '\\*\\*\\*Failed|\\(Failed\\)|Not Run|Timeout' | head -20"
section "tests" tests.log "grep -E 'tests passed|tests failed|LongSequencesGpu' | tail -4"
section "bench kernels" bench_kernels.txt "head -c 4000"
section "bench train (GPT-2 124M, B=16, T=1024)" bench_train.txt "grep -E 'bench train|median|MFU|ceiling' | head -6"
section "PyTorch peers" peers.txt "head -c 2500"
section "SASS" sass.txt "grep -E '^(FAIL|sass:)' | tail -12"
tidy_out
n=$(find "$OUT" -type f | wc -l)
overall=ok
for p in "${PHASES[@]}"; do
  case ${STATUS[$p]:-} in ok | skip*) ;; *) overall="not ok" ;; esac
done
ROWS+=("| total | $overall | $TOTAL | $(elapsed) | - | $n files in \$OUT; commit $COMMIT; ${DEVICE:-no device} |")
echo "${ROWS[-1]}" >> "$OUT/summary.md"
echo
echo "| phase | status | limit s | used s | cpu s | result |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
[[ $overall == ok ]]
