#!/usr/bin/env bash
# gpu_deps.sh: downloads (here, where Debian's mirrors are reachable) the .deb files that the
# build needs, into .deps/, so that a GPU machine without network can build loom: the device
# tool carries .deps/ and tests/gpu/run.sh unpacks them into a private prefix.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p .deps
grep -qx '/.deps/' .git/info/exclude 2>/dev/null || echo '/.deps/' >> .git/info/exclude
cd .deps
# Gloo (CPU collectives) needs hiredis, ibverbs and libnl at link and run time.
apt-get download libopenblas-openmp-dev libopenblas0-openmp libopenblas-dev libgtest-dev libcli11-dev \
  nlohmann-json3-dev libtomlplusplus-dev libtomlplusplus3 libpcre2-dev libpcre2-8-0 libgloo-dev libgloo0 \
  libhiredis0.14 libibverbs1 libnl-3-200 libnl-route-3-200 pkgconf pkgconf-bin libpkgconf3 2>/dev/null || \
apt-get download libopenblas-openmp-dev libopenblas0-openmp libgtest-dev libcli11-dev nlohmann-json3-dev libtomlplusplus-dev \
  libpcre2-dev libgloo-dev libgloo0
ls -la
