#!/usr/bin/env bash
# The main job: installs what it needs, builds the 2-D demo and runs it on the checkerboard. Trains a
# shortcut model and a flow-matching baseline on the CPU (about 2-3 minutes on 2 cores) and writes
# out/toy2d/checkerboard.png and out/toy2d/metrics.json. Arguments go to the demo (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_TARGETS=toy2d scripts/build.sh
exec build/examples/toy2d "$@"
