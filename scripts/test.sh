#!/usr/bin/env bash
# The test command: installs what it needs, configures, builds and runs every test with CTest.
# GPU tests report themselves as skipped where no GPU exists.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh "$@"
ctest --test-dir build --output-on-failure -j "${JOBS:-$(nproc)}" --timeout 1200
