#!/usr/bin/env bash
# Configures and builds into build/ (Release). Extra arguments go to CMake's configure step.
# CUDA is built where nvcc is found (on PATH or in /usr/local/cuda); set SHORTCUT_CUDA=OFF to skip it.
set -euo pipefail
cd "$(dirname "$0")/.."
"$(dirname "$0")/deps.sh"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
cuda_flag=()
[ -n "${SHORTCUT_CUDA:-}" ] && cuda_flag=(-DSHORTCUT_CUDA="$SHORTCUT_CUDA")
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "${cuda_flag[@]}" "$@" >/dev/null
jobs=${JOBS:-$(nproc)}
cmake --build build -j "$jobs" ${BUILD_TARGETS:+--target $BUILD_TARGETS}
