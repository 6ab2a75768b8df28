#!/usr/bin/env bash
# Installs the build and test dependencies from Debian packages (nothing is vendored or downloaded
# from anywhere else). Safe to run again: only missing packages are installed.
set -euo pipefail
pkgs=(g++ cmake ninja-build pkg-config libeigen3-dev catch2 libbenchmark-dev libstb-dev libcli11-dev nlohmann-json3-dev
      python3 python3-numpy python3-torch libopenmpi-dev openmpi-bin ccache "$@")
# python3: the benchmark table script and its test; python3-torch, python3-numpy: the PyTorch package
# python/shortcut_torch and its tests (Debian bookworm's torch 1.13, CPU; about 2 min 15 s to install on
# a fresh machine with 2 cores, 178 packages with their dependencies); libopenmpi-dev, openmpi-bin: the
# data-parallel training over MPI and its tests (docs/distributed.md); ccache: a compiler cache that
# CMake uses where present (a fresh clone reuses the objects of an earlier build; never required)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
