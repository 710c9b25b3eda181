#!/usr/bin/env bash
# quickstart.sh: the README's first command. On a fresh machine: install what is missing,
# build, prepare the King James Bible, train configs/default.toml, then print a sample and the
# validation loss beside the 5-gram's on the same windows.
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
# The 20 x 16 validation windows of docs/models.md, where the Kneser-Ney 5-gram
# (configs/ngram.toml, 600 steps) reaches 1.4877: the last line compares with it directly.
echo "--- validation loss (loom eval --checkpoint runs/default --batches 20 --batch-size 16) ---"
echo "    the 5-gram of configs/ngram.toml reaches 1.4877 nats/byte on these windows"
build/loom eval --checkpoint runs/default --batches 20 --batch-size 16
