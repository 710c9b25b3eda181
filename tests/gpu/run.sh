#!/usr/bin/env bash
# tests/gpu/run.sh: the one device script. On a machine with a GPU: build for sm_90a, run
# every gpu-labelled test, `loom bench kernels`, a short `loom bench train --device cuda` on
# GPT-2 124M shapes, the PyTorch peers (SDPA, layer norm, fused AdamW, nn.LSTM, a GPT step), and
# print a short table last. `loom bench kernels` carries the cuDNN baselines (fused attention,
# LSTM) when the build found cuDNN. Results go under $OUT (default /tmp/loom-gpu). Budget: under
# 8 minutes.
#
# Without network on the device machine, build dependencies travel as .deb files in .deps/
# (scripts/gpu_deps.sh fetches them; the device tool's `carry` takes .deps along).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${OUT:-/tmp/loom-gpu}
mkdir -p "$OUT"
t0=$(date +%s)
say() { echo "[run.sh $(($(date +%s) - t0))s] $*" | tee -a "$OUT/summary.txt"; }

prefix_args=()
if compgen -G ".deps/*.deb" >/dev/null; then
  root=/tmp/loom-deps
  mkdir -p "$root"
  for f in .deps/*.deb; do dpkg -x "$f" "$root"; done
  export CMAKE_PREFIX_PATH="$root/usr:${CMAKE_PREFIX_PATH:-}"
  export LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu/openblas-openmp:$root/usr/lib/x86_64-linux-gnu:$root/usr/lib:$root/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  export PKG_CONFIG_PATH="$root/usr/lib/x86_64-linux-gnu/pkgconfig:${PKG_CONFIG_PATH:-}"
  export PKG_CONFIG_SYSROOT_DIR="$root"  # the .pc files say /usr: rebase them into the prefix
  export PATH="$PATH:$root/usr/bin"      # pkg-config, when the machine has none
  prefix_args=(-DCMAKE_INCLUDE_PATH="$root/usr/include;$root/usr/include/x86_64-linux-gnu/openblas-openmp"
               -DCMAKE_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu/openblas-openmp;$root/usr/lib/x86_64-linux-gnu;$root/usr/lib")
  say "unpacked $(ls .deps/*.deb | wc -l) build dependencies into $root"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
say "gpu: $(cat "$OUT/gpu.txt")"
say "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOOM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
  "${prefix_args[@]}" > "$OUT/configure.log" 2>&1 || { say "configure FAILED (see configure.log)"; tail -20 "$OUT/configure.log"; exit 1; }
cmake --build build-gpu -j "$(nproc)" > "$OUT/build.log" 2>&1 || { say "build FAILED (see build.log)"; grep -m20 -E "error|Error" "$OUT/build.log"; exit 1; }
say "built"
grep -E "spill|registers" "$OUT/build.log" | sort -u > "$OUT/ptxas.txt" || true

(cd build-gpu && timeout 240 ctest -L gpu --output-on-failure) > "$OUT/gpu_tests.log" 2>&1
say "gpu tests: $(grep -E 'tests passed|tests failed' "$OUT/gpu_tests.log" | tail -1)"

# 180 s: the cuDNN attention baselines build their plans by runtime compilation (seconds each).
timeout 180 build-gpu/loom bench kernels > "$OUT/bench_kernels.txt" 2>&1
say "bench kernels: rc $?"
timeout 150 build-gpu/loom bench train --device cuda --model gpt --n-layer 12 --d-model 768 --n-head 12 \
  --seq-len 1024 --vocab 50304 --batch 8 --steps 10 > "$OUT/bench_train.txt" 2>&1
say "bench train: rc $?"
PYTHONUNBUFFERED=1 timeout 120 python3 tests/gpu/peers.py > "$OUT/peers.txt" 2>&1
say "peers: rc $?"

echo
echo "==================== loom on $(cat "$OUT/gpu.txt") ===================="
cat "$OUT/bench_kernels.txt"
echo "---- training step (GPT-2 124M shapes) ----"
grep -E "median|parameters" "$OUT/bench_train.txt"
echo "---- PyTorch peers ----"
cat "$OUT/peers.txt"
echo "---- LSTM: cuDNN (loom bench kernels) and torch nn.LSTM ----"
grep -hE "^lstm |nn\.LSTM" "$OUT/bench_kernels.txt" "$OUT/peers.txt"
echo "---- tests ----"
grep -E "tests passed|tests failed|\*\*\*Failed|Skipped" "$OUT/gpu_tests.log" | tail -15
say "done"
