#!/usr/bin/env bash
# test.sh: the README's test command: install what is missing, build everything (CUDA sources
# too when nvcc is present), run the whole ctest suite. GPU tests skip (exit 77) without a device.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install_deps.sh
scripts/build.sh
cd build
ctest --output-on-failure -j "$(nproc)" --timeout 900 "$@"
