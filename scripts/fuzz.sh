#!/usr/bin/env bash
# fuzz.sh: runs loom's libFuzzer harnesses (tests/fuzz/) for longer than the test suite does.
#   scripts/fuzz.sh [-t SECONDS] [-j JOBS] [HARNESS...]
# HARNESS: safetensors, checkpoint, config, bpe, gpt2_vocab, data_folder, pair_folder, shard,
# gpt2_import (default: all of them, one after another). SECONDS per harness, default 600.
# JOBS > 1 runs that many fuzzing processes per harness (libFuzzer's -jobs/-workers), sharing
# one corpus.
# Builds the harnesses (clang, ASan + UBSan) first: in build/tests/fuzz/build when the main build
# has configured them there (corpora in build/tests/fuzz/work/<harness>/, shared with ctest),
# else in build-fuzz/ (corpora in build-fuzz/work/<harness>/). Corpora grow across runs. A
# crash leaves its input in the work folder's <harness>/artifacts/: minimise it,
# fix the bug, and commit the input to tests/fuzz/regress/<harness>/ so that every test run
# replays it:
#   <that folder>/<harness>_fuzz -minimize_crash=1 -runs=100000 INPUT
#   LOOM_FUZZ_SHOW=1 <that folder>/<harness>_fuzz INPUT    # replays one input, says why it was refused
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=600 jobs=1
while getopts "t:j:" opt; do
  case $opt in
    t) seconds=$OPTARG ;;
    j) jobs=$OPTARG ;;
    *) sed -n '2,5p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))

cxx=$(command -v clang++-14 || command -v clang++ || true)
[[ -n "$cxx" ]] || { echo "fuzz.sh: no clang++; run scripts/install_deps.sh" >&2; exit 2; }
out=build/tests/fuzz/build work_root=build/tests/fuzz/work  # the corpora ctest grows too
if [[ ! -f $out/CMakeCache.txt ]]; then
  out=build-fuzz work_root=build-fuzz/work
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  [[ -f $out/build.ninja ]] ||
    cmake -S tests/fuzz/harnesses -B "$out" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" "${launcher[@]}"
fi
cmake --build "$out" -j "$(nproc)"

names=("$@")
if ((${#names[@]} == 0)); then
  for f in tests/fuzz/harnesses/*_fuzz.cpp; do names+=("$(basename "$f" _fuzz.cpp)"); done
fi
status=0
for name in "${names[@]}"; do
  exe=$out/${name}_fuzz
  [[ -x "$exe" ]] || { echo "fuzz.sh: no harness '$name' (see tests/fuzz/harnesses/)" >&2; exit 2; }
  corpora=("$out/seeds/$name")
  [[ "$name" == config ]] && corpora+=(configs)
  if ((jobs > 1)); then
    # Parallel workers: libFuzzer merges what they find into the first corpus folder, and writes
    # one fuzz-N.log per worker into the folder it runs in (the work folder).
    work=$PWD/$work_root/$name
    mkdir -p "$work/corpus" "$work/artifacts"
    abs=()
    for c in "${corpora[@]}"; do abs+=("$PWD/$c"); done
    (cd "$work" && "$OLDPWD/$exe" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 -max_total_time="$seconds" \
      -jobs="$jobs" -workers="$jobs" -artifact_prefix="$work/artifacts/" "$work/corpus" "${abs[@]}") || status=1
  else
    tests/fuzz/run_fuzz.sh "$exe" "$seconds" "$work_root/$name" "${corpora[@]}" || status=1
  fi
done
exit $status
