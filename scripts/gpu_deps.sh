#!/usr/bin/env bash
# gpu_deps.sh: prepares, on this machine, what the GPU machine lacks for a GPU-only build of loom
# (docs/gpu_run.md). That machine has CUDA, CMake, ninja, g++ and Python, but none of the Debian
# -dev packages scripts/install_deps.sh installs, and no registry to fetch them from. So their
# headers, libraries and CMake files travel with the working tree: this script copies them from
# this machine's installed packages (scripts/install_deps.sh installs them), keeps only what the
# GPU-only build and its binaries use, and packs them into .deps/gpu-prefix.tar.gz (ignored by
# git; the device tool's `carry` takes .deps along). tests/gpu/run.sh unpacks it into a private
# prefix and points CMake and the loader at it. Gloo is not among them: the GPU-only build
# leaves out CPU ranks (cmake/Dependencies.cmake).
#
# Usage: scripts/gpu_deps.sh   (again whenever the packages change; prints the size)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# libopenblas0-openmp needs libgfortran5, which needs libquadmath0; libgomp comes with the
# compiler. toml++ and PCRE2 are compiled libraries: their runtime packages go too. Protobuf
# (TensorBoard event files) brings protoc, which runs at build time from the prefix's bin/.
pkgs=(libopenblas-openmp-dev libopenblas0-openmp libgfortran5 libquadmath0 libgtest-dev libcli11-dev
      nlohmann-json3-dev libtomlplusplus-dev libtomlplusplus3 libpcre2-dev libpcre2-8-0
      libprotobuf-dev libprotobuf32 protobuf-compiler libprotoc32)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "gpu_deps: error: not installed here: ${missing[*]} (run scripts/install_deps.sh)" >&2
  exit 2
fi

stage=$(mktemp -d /tmp/loom-gpu-deps.XXXXXX)
trap 'rm -rf "$stage"' EXIT
# Every file and link of the packages (not their directories, which tar would copy whole).
dpkg -L "${pkgs[@]}" | while IFS= read -r f; do
  [[ -d "$f" && ! -L "$f" ]] || printf '%s\n' "$f"
done | tar -cf - --no-recursion -T - 2>/dev/null | tar -xf - -C "$stage"

# Only what the build and the binaries use: no static libraries but GoogleTest's (tests link
# them), no LAPACK, no documentation but the licences, no pkg-config files or OpenBLAS CMake
# files (their paths say /usr, which is not where this prefix lands; cmake/Dependencies.cmake
# finds those libraries by name), and no link left pointing at something not shipped.
cd "$stage"
find usr -name '*.a' ! -name 'libgtest.a' ! -name 'libgtest_main.a' -delete
find usr -name 'liblapack*' -delete
find usr -path '*/pkgconfig/*' -delete
find usr -path '*/openblas-openmp/cmake/*' -delete
rm -rf usr/share/man usr/share/lintian usr/share/bug usr/share/doc-base
find usr/bin ! -type d ! -name protoc -delete
find usr/share/doc -type f ! -name copyright -delete 2>/dev/null || true
find usr -xtype l -delete
find usr -depth -type d -empty -delete
{
  echo "# .deps/gpu-prefix.tar.gz: Debian packages for the GPU-only build (scripts/gpu_deps.sh)"
  for p in "${pkgs[@]}"; do dpkg-query -W -f='${Package} ${Version}\n' "$p"; done
} > usr/LOOM_GPU_DEPS.txt
cd - >/dev/null

mkdir -p .deps
rm -f .deps/*.deb  # the former layout: .deb files unpacked on the GPU machine
tar -C "$stage" -czf .deps/gpu-prefix.tar.gz usr
cp "$stage/usr/LOOM_GPU_DEPS.txt" .deps/packages.txt
echo "gpu_deps: .deps/gpu-prefix.tar.gz: $(du -k .deps/gpu-prefix.tar.gz | cut -f1) KiB packed," \
     "$(du -sk "$stage/usr" | cut -f1) KiB unpacked, $(find "$stage/usr" -type f | wc -l) files from ${#pkgs[@]} packages"
