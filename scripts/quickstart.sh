#!/usr/bin/env bash
# quickstart.sh: the README's first command. On a fresh machine: install what is missing,
# build, prepare the King James Bible, train configs/default.toml, then print a sample.
# Running it again continues (or simply re-samples) the same run instead of starting over.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install_deps.sh
LOOM_BUILD_TARGETS=loom scripts/build.sh  # the tests build with scripts/test.sh
[[ -f data/kjv/meta.json ]] || build/loom prepare --corpus kjv --out data/kjv
resume=()
[[ -e runs/default/latest ]] && resume=(--resume)
build/loom train --config configs/default.toml "${resume[@]}" "$@"
echo
echo "--- sample (loom sample --checkpoint runs/default --prompt 'And God said' --temperature 0.8 --top-p 0.9) ---"
build/loom sample --checkpoint runs/default --prompt "And God said" --max-new-tokens 300 --temperature 0.8 --top-p 0.9 --seed 1
echo
build/loom eval --checkpoint runs/default
