#!/usr/bin/env bash
# run_test.sh: checks tests/gpu/run.sh's promises without a GPU or a build (ctest: gpu_run_script,
# label unit), since the day a GPU is lent there is no time to find them broken:
#   - the plan fits: the phases' limits and the reserve sum to at most 420 s;
#   - whichever phase runs out of time, the phases before it keep their results in $OUT, the
#     ones after it still run, at most 8 files are left there, and the last line printed is the
#     phase table's last row;
#   - a run killed from outside (the device tool's own limit) leaves what finished before;
#   - the whole budget (LOOM_GPU_TOTAL) holds: phases with no time left are skipped, not run;
#   - sass_check.py finds local memory and tensor-core instructions in cuobjdump's output and
#     spills in a ptxas report (a stand-in cuobjdump prints known SASS).
# run.sh runs in its dry mode (LOOM_GPU_RUN_DRY=1): every phase is a stand-in.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
run=$here/run.sh
tmp=$(mktemp -d /tmp/loom-run-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

mapfile -t plan < <("$run" --plan)
phases=()
for line in "${plan[@]}"; do
  read -r name secs <<< "$line"
  case $name in reserve) ;; total) total=$secs ;; *) phases+=("$name") ;; esac
done
((total <= 420)) || fail "the plan sums to $total s, over 420"
((${#phases[@]} == 7)) || fail "expected 7 phases, the plan lists ${#phases[@]}: ${phases[*]}"

# The row of phase $2 in the table printed to $1.
row() { grep -E "^\| $2 \|" "$1" | tail -1; }

# check_table <stdout file>: the last line is the table's last row, and every line from the
# table's header down is a row.
check_table() {
  local last header
  last=$(tail -1 "$1")
  [[ $last =~ ^\|\ total\ \|.*\|$ ]] || fail "$2: the last line is not the table's last row: '$last'"
  header=$(grep -nE '^\| phase \| status \|' "$1" | tail -1 | cut -d: -f1)
  [[ -n $header ]] || { fail "$2: no table header"; return; }
  if tail -n +"$header" "$1" | grep -vqE '^\|.*\|$'; then fail "$2: a line inside the table is not a row"; fi
}

# check_out <out dir> <label>: at most 8 files, none deeper than $OUT itself.
check_out() {
  local n deep
  n=$(find "$1" -type f | wc -l)
  ((n <= 8)) || fail "$2: $n files in \$OUT, over 8"
  deep=$(find "$1" -mindepth 2 | wc -l)
  ((deep == 0)) || fail "$2: $deep entries in folders under \$OUT"
}

file_of() {
  case $1 in setup | build) echo build.log ;; tests) echo tests.log ;; sass) echo sass.txt ;; *) echo "$1.txt" ;; esac
}

# The runs below sleep more than they compute: they run side by side, then are checked.
# A timeout in each phase in turn; 12 stray files dropped by the first phase test the 8-file cap.
for p in "${phases[@]}"; do
  lim=LOOM_GPU_LIMIT_$p sl=LOOM_GPU_DRY_SLEEP_$p
  (env OUT="$tmp/out_$p" LOOM_GPU_RUN_DRY=1 "$lim=1" "$sl=5" LOOM_GPU_DRY_STRAY_setup=12 \
     "$run" > "$tmp/stdout_$p" 2>&1; echo $? > "$tmp/rc_$p") &
done
# Killed from outside in the middle of the tests phase.
(env OUT="$tmp/out_killed" LOOM_GPU_RUN_DRY=1 LOOM_GPU_DRY_SLEEP_tests=30 timeout 6 "$run" \
   > "$tmp/stdout_killed" 2>&1; echo $? > "$tmp/rc_killed") &
# A total budget too small for every phase.
(start=$(date +%s)
 env OUT="$tmp/out_budget" LOOM_GPU_RUN_DRY=1 LOOM_GPU_TOTAL=14 LOOM_GPU_DRY_SLEEP_build=6 "$run" \
   > "$tmp/stdout_budget" 2>&1
 echo $(($(date +%s) - start)) > "$tmp/took_budget") &
wait

for p in "${phases[@]}"; do
  out=$tmp/out_$p
  rc=$(cat "$tmp/rc_$p")
  ((rc != 0)) || fail "timeout in $p: run.sh exited 0 although a phase timed out"
  check_table "$tmp/stdout_$p" "timeout in $p"
  check_out "$out" "timeout in $p"
  [[ $(row "$tmp/stdout_$p" "$p") == "| $p | timeout |"* ]] || fail "timeout in $p: its row says '$(row "$tmp/stdout_$p" "$p")'"
  grep -q "^| $p | timeout |" "$out/summary.md" || fail "timeout in $p: summary.md lacks its row"
  seen=0
  for q in "${phases[@]}"; do
    [[ $q == "$p" ]] && { seen=1; continue; }
    # Before and after the timeout alike, every other phase ran and kept its result.
    [[ $(row "$tmp/stdout_$p" "$q") == "| $q | ok |"* ]] || fail "timeout in $p: phase $q's row says '$(row "$tmp/stdout_$p" "$q")'"
    grep -q "dry run: phase $q" "$out/$(file_of "$q")" 2>/dev/null ||
      fail "timeout in $p: $(file_of "$q") lacks phase $q's output ($([[ $seen == 0 ]] && echo before || echo after) the timeout)"
  done
  grep -q "stray 11" "$out/extra.log" 2>/dev/null || fail "timeout in $p: the stray files were not folded into extra.log"
done

# Killed in the middle of the tests phase: setup and build have written their results and
# their rows already.
out=$tmp/out_killed
[[ $(cat "$tmp/rc_killed") == 124 ]] || fail "killed run: expected timeout's 124"
for q in setup build; do
  grep -q "^| $q | ok |" "$out/summary.md" 2>/dev/null || fail "killed run: summary.md lacks phase $q's row"
  grep -q "dry run: phase $q" "$out/build.log" 2>/dev/null || fail "killed run: build.log lacks phase $q's output"
done
grep -q "dry run: phase tests" "$out/tests.log" 2>/dev/null || fail "killed run: tests.log lacks what the tests phase printed so far"

# A total budget too small for every phase: the run ends inside it, the rest say "no time".
took=$(cat "$tmp/took_budget")
((took <= 14)) || fail "budget: the run took $took s of a 14 s budget"
[[ $(row "$tmp/stdout_budget" sass) == "| sass | no time |"* ]] || fail "budget: sass's row says '$(row "$tmp/stdout_budget" sass)'"
check_table "$tmp/stdout_budget" "budget"

# sass_check.py on known SASS: a kernel with LDL/STL fails the run, attention's HMMA is seen.
mkdir -p "$tmp/bin" "$tmp/build/kernels"
touch "$tmp/build/kernels/libloom_kernel_attention_cuda.a" "$tmp/build/kernels/libloom_kernel_adamw_cuda.a"
cat > "$tmp/bin/cuobjdump" <<'EOF'
#!/usr/bin/env bash
# A stand-in for cuobjdump -sass: the layout of CUDA 13's output, a few instructions per kernel.
case $2 in
  *attention*) cat <<'S'
	code for sm_90a
		Function : _ZN4loom4cuda20attention_fwd_kernelILi64EEEvNS0_7AttnFwdE
	.headerflags	@"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                                   /* 0x00000a00ff017b82 */
        /*0a40*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;                    /* 0x0000000c0804723c */
        /*0a50*/              @!P0 HMMA.16816.F32.BF16 R16, R8, R14, R16 ;                  /* 0x0000000e0810723c */
        /*0a60*/                   EXIT ;                                                   /* 0x000000000000794d */
S
  ;;
  *adamw*) cat <<'S'
	code for sm_90a
		Function : _ZN4loom4cuda12adamw_kernelILb0EEEvPf
        /*0000*/                   LDC R1, c[0x0][0x28] ;                                   /* 0x00000a00ff017b82 */
        /*0010*/                   STL [R1+0x4], R2 ;                                       /* 0x0000040201007387 */
        /*0020*/                   LDL.LU R3, [R1+0x4] ;                                    /* 0x0000040001037983 */
        /*0030*/                   EXIT ;                                                   /* 0x000000000000794d */
S
  ;;
esac
EOF
chmod +x "$tmp/bin/cuobjdump"
PATH="$tmp/bin:$PATH" python3 "$here/sass_check.py" --build "$tmp/build" > "$tmp/sass1" 2>&1
rc=$?
((rc == 1)) || fail "sass: local memory in adamw_kernel should fail the check (rc $rc)"
grep -q "^FAIL adamw_kernel<false>: 2 LDL/STL" "$tmp/sass1" || fail "sass: the LDL/STL of adamw_kernel were not reported: $(cat "$tmp/sass1")"
grep -q "tensor cores in 1/1 attention kernels (HMMA)" "$tmp/sass1" || fail "sass: attention's HMMA was not seen: $(tail -1 "$tmp/sass1")"
# Without the local memory, and with a ptxas report that spills.
rm "$tmp/build/kernels/libloom_kernel_adamw_cuda.a"
cat > "$tmp/build.log" <<'EOF'
[1/2] Building CUDA object kernels/CMakeFiles/loom_kernel_attention_cuda.dir/attention/attention.cu.o
ptxas info    : Compiling entry function '_ZN4loom4cuda20attention_fwd_kernelILi64EEEvNS0_7AttnFwdE' for 'sm_90a'
ptxas info    : Function properties for _ZN4loom4cuda20attention_fwd_kernelILi64EEEvNS0_7AttnFwdE
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 49152 bytes smem
EOF
PATH="$tmp/bin:$PATH" python3 "$here/sass_check.py" --build "$tmp/build" --log "$tmp/build.log" > "$tmp/sass2" 2>&1
rc=$?
((rc == 0)) || fail "sass: a clean attention kernel should pass (rc $rc): $(cat "$tmp/sass2")"
grep -qE "^attention +255 +0 +0 +2 +HMMA" "$tmp/sass2" || fail "sass: the attention row lacks its registers or HMMA count: $(cat "$tmp/sass2")"
sed -i 's/0 bytes spill stores/16 bytes spill stores/' "$tmp/build.log"
PATH="$tmp/bin:$PATH" python3 "$here/sass_check.py" --build "$tmp/build" --log "$tmp/build.log" > "$tmp/sass3" 2>&1
(($? == 1)) || fail "sass: 16 bytes of spill stores should fail the check"

if ((fails)); then
  echo "run_test: $fails check(s) failed"
  exit 1
fi
echo "run_test: run.sh's invariants hold (${#phases[@]} phases, plan $total s)"
