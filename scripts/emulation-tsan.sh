#!/usr/bin/env bash
# ThreadSanitizer over the kernels that cooperate inside a block (attention, adaLN, the reductions of
# the elementwise and target ops), in the CPU emulation of CUDA: builds gpu_tests_emulated_tsan in
# build-tsan/ and runs those test cases. Every thread of a block is a TSan fiber, and only a
# __syncthreads or a warp collective orders two threads' accesses, so a missing barrier is reported
# as a data race (and the run fails). Not part of scripts/test.sh (a TSan build takes minutes);
# docs/cuda.md shows a run that finds a barrier removed on purpose.
# Use: scripts/emulation-tsan.sh [Catch2 test spec]   (default: "[attention],[adaln],[ops]")
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
spec=${1:-"[attention],[adaln],[ops]"}
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=Release -DSHORTCUT_CUDA=OFF -DSHORTCUT_NATIVE=OFF \
      -DSHORTCUT_EMULATION_TSAN=ON -DSHORTCUT_EMULATION_ASAN=OFF \
      -DSHORTCUT_BUILD_EXAMPLES=OFF -DSHORTCUT_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build-tsan -j "${JOBS:-$(nproc)}" --target gpu_tests_emulated_tsan
# halt_on_error: the first race fails the run; the OpenMP runtime of the CPU reference is not
# instrumented, so the reference runs single-threaded
OMP_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" \
  build-tsan/tests/gpu/gpu_tests_emulated_tsan "$spec"
