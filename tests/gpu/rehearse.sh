#!/usr/bin/env bash
# tests/gpu/rehearse.sh: the GPU run rehearsed here, before any GPU time is spent (docs/gpu_run.md).
# It reproduces the GPU machine's software on this one and runs tests/gpu/run.sh's own set-up and
# build there, so that the day a GPU is lent, run.sh cannot fail for a missing file:
#   1. stages the tree as the device tool sends it: tracked files, untracked files git does not
#      ignore, and the carried folder .deps (scripts/gpu_deps.sh); checks it is under 64 MiB;
#   2. in a private mount namespace, lays a throw-away overlay on /usr and deletes from it every
#      file of the packages the GPU machine lacks (OpenBLAS, GoogleTest, CLI11, nlohmann-json,
#      toml++, PCRE2's development files, Gloo and what it needs, libgfortran, libquadmath,
#      pkg-config, the sanitizer runtimes), then checks that none of them can be found;
#   3. runs run.sh there with no device: set-up, build and the SASS phase run as they will on
#      the GPU machine, the GPU phases say "no device" and skip;
#   4. prints the budget table (tests/gpu/budget.py): each phase's plan on the GPU machine, and
#      the build's cost measured here (CPU-seconds per step) replayed on its 16 cores.
# Exit 0 when everything built with the packages hidden and the plan holds (at most 420 s).
#
# Needs root (mounts) and unshare. Takes the build's CPU time here (about 10-20 minutes on two
# shared cores; ccache is off, so that the budget counts real compiles). Leaves its work in
# LOOM_REHEARSE_DIR (default /tmp/loom-rehearse): tree/, out/ (what $OUT would bring back),
# run.log, steps.log.
set -euo pipefail

# Packages the GPU machine lacks. libpcre2-8-0 stays: every Debian-like system has it (grep
# needs it), and run.sh's prefix brings its own copy for the link anyway.
HIDE_PKGS=(libopenblas-openmp-dev libopenblas0-openmp libopenblas-pthread-dev libopenblas0-pthread
           libopenblas-serial-dev libopenblas0-serial libopenblas-dev libopenblas0 libblas-dev libblas3
           liblapack-dev liblapack3 libgfortran5 libquadmath0 libgfortran-12-dev
           libgtest-dev libgmock-dev googletest libcli11-dev nlohmann-json3-dev libtomlplusplus-dev
           libtomlplusplus3 libpcre2-dev libpcre2-16-0 libpcre2-32-0 libpcre2-posix3
           libgloo-dev libgloo0 libhiredis0.14 libhiredis-dev libibverbs1 libibverbs-dev
           libnl-3-200 libnl-route-3-200 libnl-3-dev libnl-route-3-dev
           pkg-config pkgconf pkgconf-bin libpkgconf3 libasan8 libtsan2 libubsan1 liblsan0
           libprotobuf-dev libprotobuf32 libprotobuf-lite32 protobuf-compiler libprotoc32)
# What must not be found once they are hidden: files (links followed), libraries by soname
# through the loader, commands.
PROBE_FILES=(/usr/include/gtest/gtest.h /usr/include/CLI/CLI.hpp /usr/include/nlohmann/json.hpp
             /usr/include/toml++/toml.h /usr/include/pcre2.h /usr/include/gloo/config.h
             /usr/include/x86_64-linux-gnu/cblas.h /usr/include/cblas.h
             /usr/lib/x86_64-linux-gnu/libgtest.a /usr/lib/x86_64-linux-gnu/libpcre2-8.so
             /usr/lib/x86_64-linux-gnu/libblas.so /usr/lib/x86_64-linux-gnu/libopenblas.so
             /usr/lib/libgloo.so /usr/lib/x86_64-linux-gnu/cmake/GTest /usr/share/cmake/CLI11
             /usr/share/cmake/nlohmann_json /usr/lib/x86_64-linux-gnu/cmake/tomlplusplus /usr/share/cmake/Gloo
             /usr/lib/x86_64-linux-gnu/pkgconfig/libpcre2-8.pc /usr/include/google/protobuf/message.h)
PROBE_SONAMES=(libopenblas.so.0 libblas.so.3 libgfortran.so.5 libquadmath.so.0 libtomlplusplus.so.3
               libgloo.so.0 libhiredis.so.0.14 libibverbs.so.1 libasan.so.8 libtsan.so.2 libprotobuf.so.32)
PROBE_COMMANDS=(pkg-config pkgconf protoc)

die() { echo "rehearse: error: $*" >&2; exit 2; }
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=${LOOM_REHEARSE_DIR:-/tmp/loom-rehearse}
export REHEARSE_WORK=$work

# ---- inside the namespace (the script calls itself through unshare) --------------------------
if [[ ${1:-} == --inside ]]; then
  mount -t tmpfs tmpfs "$work/ovl"
  mkdir "$work/ovl/upper" "$work/ovl/work"
  mount -t overlay overlay -o "lowerdir=/usr,upperdir=$work/ovl/upper,workdir=$work/ovl/work" /usr
  # Deleting happens in the overlay only: never without it.
  [[ $(findmnt -n -o FSTYPE --target /usr) == overlay ]] || die "/usr is not the overlay: nothing deleted"
  echo "rehearse: hiding $(grep -c '' "$work/hidden.txt") files"
  tr '\n' '\0' < "$work/hidden.txt" | xargs -0 rm -f --
  # Their folders too, deepest first, where nothing else is left in them.
  sort -r "$work/hidden_dirs.txt" | tr '\n' '\0' | xargs -0 rmdir --ignore-fail-on-non-empty -- 2>/dev/null || true
  bad=()
  for f in "${PROBE_FILES[@]}"; do [[ -e $f ]] && bad+=("$f"); done
  for c in "${PROBE_COMMANDS[@]}"; do command -v "$c" >/dev/null && bad+=("command $c"); done
  for s in "${PROBE_SONAMES[@]}"; do
    env -u LD_LIBRARY_PATH python3 -c "import ctypes, sys; ctypes.CDLL(sys.argv[1])" "$s" 2>/dev/null && bad+=("loader finds $s")
  done
  ((${#bad[@]} == 0)) || die "still visible after hiding: ${bad[*]}"
  echo "rehearse: hidden and checked: ${#PROBE_FILES[@]} files, ${#PROBE_SONAMES[@]} libraries, ${#PROBE_COMMANDS[@]} commands"
  cd "$work/tree"
  t="$work/tree/tests/gpu/steptime.sh"
  # Slow clocks for this machine's 2 shared cores; the budget table speaks of the GPU machine's.
  env OUT="$work/out" LOOM_GPU_NO_DEVICE=1 LOOM_GPU_DEPS_ROOT="$work/deps" CCACHE_DISABLE=1 \
    LOOM_GPU_TOTAL=20000 LOOM_GPU_LIMIT_setup=900 LOOM_GPU_LIMIT_build=${LOOM_REHEARSE_BUILD_LIMIT:-14400} \
    LOOM_GPU_LIMIT_tests=1200 LOOM_GPU_LIMIT_bench_kernels=300 LOOM_GPU_LIMIT_bench_train=300 \
    LOOM_GPU_LIMIT_peers=300 LOOM_GPU_LIMIT_sass=600 LOOM_STEPTIME_LOG="$work/steps.log" \
    LOOM_GPU_CMAKE_ARGS="-DCMAKE_CXX_COMPILER_LAUNCHER=$t -DCMAKE_CUDA_COMPILER_LAUNCHER=$t -DCMAKE_CXX_LINKER_LAUNCHER=$t" \
    tests/gpu/run.sh
  exit
fi

# ---- outside -------------------------------------------------------------------------------
t0=$(date +%s)
[[ $(id -u) == 0 ]] || die "needs root: a private mount namespace hides the packages"
command -v unshare >/dev/null || die "needs unshare (util-linux)"
[[ -f $src/.deps/gpu-prefix.tar.gz ]] || die "no .deps/gpu-prefix.tar.gz: run scripts/gpu_deps.sh first"
case $work in /usr | /usr/* | / | "$src" | "$src"/*) die "LOOM_REHEARSE_DIR=$work: choose a folder outside /usr and the tree" ;; esac

# 1. The tree as the device tool sends it.
rm -rf "$work"
mkdir -p "$work/tree" "$work/out" "$work/ovl"
(cd "$src" && {
  git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [[ -e $f || -L $f ]] && printf '%s\0' "$f"
  done
  printf '%s\0' .deps
} | tar -cf - --null -T -) | tar -xf - -C "$work/tree"
tree_b=$(du -sb --exclude=.deps "$work/tree" | cut -f1)
deps_b=$(du -sb "$work/tree/.deps" | cut -f1)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "rehearse: the tree travels as $(mib "$tree_b") + .deps $(mib "$deps_b") = $(mib $((tree_b + deps_b))) of 64 MiB"
((tree_b + deps_b <= 64 * 1048576)) || die "what travels is over the device tool's 64 MiB"
commit=$(git -C "$src" rev-parse --short HEAD)
[[ -z $(git -C "$src" status --porcelain --untracked-files=no) ]] || commit="$commit+changes"
export LOOM_GPU_COMMIT=${LOOM_GPU_COMMIT:-$commit}

# 2. What to hide: every file of the packages installed here, inside /usr only (Debian's /lib
#    and /bin lead there; a file elsewhere, under /etc, is left alone and listed).
installed=()
for p in "${HIDE_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" && installed+=("$p")
done
: > "$work/hidden.txt"
: > "$work/hidden_dirs.txt"
: > "$work/not_hidden.txt"
dpkg -L "${installed[@]}" | while IFS= read -r f; do
  [[ -e $f || -L $f ]] || continue
  if [[ -d $f ]]; then
    [[ -L $f ]] || readlink -f "$f" >> "$work/hidden_dirs.txt"
    continue
  fi
  real="$(readlink -f "$(dirname "$f")")/$(basename "$f")"
  if [[ $real == /usr/* ]]; then echo "$real" >> "$work/hidden.txt"; else echo "$f" >> "$work/not_hidden.txt"; fi
done
sort -u -o "$work/hidden_dirs.txt" "$work/hidden_dirs.txt"
sed -i '\|^/usr/|!d' "$work/hidden_dirs.txt"
echo "rehearse: hiding ${#installed[@]} packages: ${installed[*]}"
[[ -s $work/not_hidden.txt ]] && echo "rehearse: left visible (outside /usr): $(tr '\n' ' ' < "$work/not_hidden.txt")"

# 3. run.sh in the namespace.
set +e
unshare -m --propagation private "$src/tests/gpu/rehearse.sh" --inside 2>&1 | tee "$work/run.log"
rc=${PIPESTATUS[0]}
set -e
problems=()
((rc == 0)) || problems+=("run.sh (or the hiding) exited $rc")
n=$(find "$work/out" -type f | wc -l)
((n <= 8)) || problems+=("$n files in \$OUT")
[[ $(tail -1 "$work/run.log") =~ ^\|\ total\ \| ]] || problems+=("run.sh's last line is not the table's last row")

# 4. The budget.
"$work/tree/tests/gpu/run.sh" --plan > "$work/plan.txt"
echo
echo "rehearse: $((${#installed[@]})) packages hidden ($(grep -c '' "$work/hidden.txt") files); tree $(mib "$tree_b")," \
     ".deps $(mib "$deps_b"); $n files in \$OUT; commit $commit; rehearsal took $(($(date +%s) - t0)) s"
for p in "${problems[@]}"; do echo "rehearse: FAIL: $p"; done
echo "---- budget of tests/gpu/run.sh on the GPU machine"
python3 "$src/tests/gpu/budget.py" --plan "$work/plan.txt" --summary "$work/out/summary.md" \
  --build "$work/tree/build-gpu" --steps "$work/steps.log" --cores 16 --max 420 || problems+=("budget")
((${#problems[@]} == 0))
