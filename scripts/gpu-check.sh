#!/usr/bin/env bash
# The GPU check, in one command on the GPU machine (run from anywhere in the repository):
# configure and build the CUDA targets, run the GPU tests, the kernel benchmark, then the tests
# again under compute-sanitizer (memcheck on everything, racecheck on the kernels that use shared
# memory; GPU_CHECK_SANITIZE=0 skips them, SANITIZER_TIMEOUT bounds each, default 240 s). Logs go
# to $OUT when it is set (the device tool's output folder), else to build-gpu/logs; a summary
# table is printed last.
#
# The GPU machine lacks some build dependencies (Catch2, nlohmann-json): unpack them into .deps/
# first, on a machine with apt, with ../shared/tools/device-deps.sh, and carry .deps along.
# Usage: scripts/gpu-check.sh [extra CMake configure arguments]
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=build-gpu
logs=${OUT:-$build/logs}
mkdir -p "$logs"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
jobs=${JOBS:-$(nproc)}
declare -A status

step() {  # step NAME LOGFILE command...: runs, tees, records the exit status
  local name=$1 log=$2
  shift 2
  echo "=== $name: $*" | tee -a "$logs/$log"
  "$@" 2>&1 | tee -a "$logs/$log"
  status[$name]=${PIPESTATUS[0]}
}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv || true
  nvcc --version | tail -2
} 2>&1 | tee "$logs/build.log"

step configure build.log cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$root/.deps/usr" -DCMAKE_CUDA_ARCHITECTURES=90 -DSHORTCUT_CUDA=ON \
  -DSHORTCUT_BUILD_EXAMPLES=OFF "$@"
step build build.log cmake --build "$build" -j "$jobs" --target gpu_tests kernels_bench

tests=$build/tests/gpu/gpu_tests
bench=$build/benchmarks/kernels_bench
if [ "${status[build]}" = 0 ]; then
  step tests gpu_tests.log "$tests" --durations yes
  step bench bench.log "$bench" --benchmark_out="$logs/bench.json" --benchmark_out_format=json
  sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  if [ "${GPU_CHECK_SANITIZE:-1}" = 1 ] && [ -x "$sanitizer" ]; then
    # bounded, so that one device call (10 minutes) always gets its logs back; 124 = timed out
    limit=${SANITIZER_TIMEOUT:-240}
    step memcheck memcheck.log timeout "$limit" "$sanitizer" --tool memcheck --error-exitcode 3 "$tests"
    # racecheck tracks shared memory: the kernels that use it, at the sizes that keep it fast
    step racecheck racecheck.log timeout "$limit" "$sanitizer" --tool racecheck --racecheck-report all \
      --error-exitcode 3 "$tests" "[attention]~[large],[adaln],[targets]"
  else
    echo "compute-sanitizer runs skipped" | tee -a "$logs/memcheck.log"
  fi
fi

{
  echo
  echo "=== gpu-check summary (exit status per step; 0 = ok) ==="
  for s in configure build tests bench memcheck racecheck; do printf '%-10s %s\n' "$s" "${status[$s]:-not run}"; done
  grep -h -E "^(All tests passed|test cases:)" "$logs/gpu_tests.log" 2>/dev/null | tail -1
  grep -h -E "ERROR SUMMARY" "$logs/memcheck.log" "$logs/racecheck.log" 2>/dev/null
  echo "worst relative errors of the GPU tests:"
  grep -h "rel err" "$logs/gpu_tests.log" 2>/dev/null | awk '{print $(NF-2), $0}' | sort -g | tail -5 | cut -d' ' -f2-
} 2>&1 | tee "$logs/summary.txt"

for s in configure build tests bench memcheck racecheck; do
  [ "${status[$s]:-0}" = 0 ] || exit 1
done
