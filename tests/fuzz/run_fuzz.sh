#!/usr/bin/env bash
# run_fuzz.sh: runs one libFuzzer harness of loom for a bounded time and says what it did.
#   run_fuzz.sh HARNESS SECONDS WORK_DIR SEED_DIR...
# First every committed regression input (tests/fuzz/regress/<name>/) is replayed once, then
# the harness fuzzes for SECONDS from the seed folders, adding what it finds to
# WORK_DIR/corpus. Prints one line: "fuzz <name>: N executions in S s, C crashes"; on a crash
# (a sanitizer report, an abort, a timeout, a huge allocation) also the end of the report, and
# exits 1; the input is saved under WORK_DIR/artifacts.
set -uo pipefail
harness=$1 seconds=$2 work=$3
shift 3
name=$(basename "$harness" _fuzz)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
regress="$here/regress/$name"
mkdir -p "$work/corpus" "$work/artifacts"
log="$work/last.log"

# Limits for every input: 10 s, 2 GiB resident, and no single allocation of 512 MiB or more
# (inputs are a few KiB; a parser asking for that much trusted a size it should have checked).
limits=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512)
# The harnesses never need the user's GPT-2 vocabulary or loom home.
unset LOOM_GPT2_DIR LOOM_HOME

fail() {
  echo "fuzz $name: $1"
  tail -n 60 "$log"
  exit 1
}

if compgen -G "$regress/*" >/dev/null; then
  n=$(find "$regress" -type f | wc -l)
  "$harness" "${limits[@]}" -artifact_prefix="$work/artifacts/" "$regress"/* >"$log" 2>&1 ||
    fail "a regression input of $regress fails again"
  echo "fuzz $name: $n regression inputs replayed"
fi

corpora=("$work/corpus" "$@")
[[ -d "$regress" ]] && corpora+=("$regress")  # fixed crashes are good places to start from
"$harness" "${limits[@]}" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
  "${corpora[@]}" >"$log" 2>&1
rc=$?
execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
[[ -n "$execs" ]] || execs="?"
if ((rc != 0)); then
  # libFuzzer stops at its first crash.
  echo "fuzz $name: $execs executions in $seconds s, 1 crash (input in $work/artifacts)"
  fail "crashed (exit $rc); copy the input into tests/fuzz/regress/$name/ once fixed"
fi
echo "fuzz $name: $execs executions in $seconds s, 0 crashes, corpus $(find "$work/corpus" -type f | wc -l) inputs"
