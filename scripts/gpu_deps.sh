#!/usr/bin/env bash
# gpu_deps.sh: downloads (here, where Debian's mirrors are reachable) the .deb files that the
# build needs, into .deps/, so that a GPU machine without network can build loom: the device
# tool carries .deps/ and tests/gpu/run.sh unpacks them into a private prefix.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p .deps
grep -qx '/.deps/' .git/info/exclude 2>/dev/null || echo '/.deps/' >> .git/info/exclude
cd .deps
apt-get download libopenblas-openmp-dev libopenblas0-openmp libopenblas-dev libgtest-dev libcli11-dev \
  nlohmann-json3-dev libtomlplusplus-dev libtomlplusplus3 2>/dev/null || \
apt-get download libopenblas-openmp-dev libopenblas0-openmp libgtest-dev libcli11-dev nlohmann-json3-dev libtomlplusplus-dev
ls -la
