#!/usr/bin/env bash
# install_deps.sh: installs what loom needs from Debian's packages, and nothing when all of it
# is already there. Safe to run again. Uses sudo when not root.
set -euo pipefail
pkgs=(cmake ninja-build g++ pkg-config libopenblas-openmp-dev libgtest-dev libcli11-dev nlohmann-json3-dev
      libtomlplusplus-dev bible-kjv bible-kjv-text)
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
echo "install_deps: all dependencies present"
