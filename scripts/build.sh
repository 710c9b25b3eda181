#!/usr/bin/env bash
# build.sh: configures (once) and builds loom into build/ with Ninja. Extra arguments go to
# cmake's configure step, e.g. scripts/build.sh -DLOOM_CUDA=OFF. LOOM_BUILD_TARGETS names the
# targets to build (default: all of them; scripts/quickstart.sh builds only `loom`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ ! -f build/build.ninja || $# -gt 0 ]]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
fi
cmake --build build -j "$(nproc)" ${LOOM_BUILD_TARGETS:+--target $LOOM_BUILD_TARGETS}
