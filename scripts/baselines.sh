#!/usr/bin/env bash
# The paper's comparison (docs/baselines.md): the six objectives of DESIGN.md section 7 and the
# average-velocity objectives of section 8 (meanflow, alpha_flow) on one budget of
# optimizer steps, on the checkerboard (the 2-D demo) and on Fashion-MNIST with the CPU preset of
# docs/images.md (tiny DiT, batch 64). The two distillations start from a flow-matching teacher trained
# for half the steps and train for the other half; on images the teacher is the flow-matching run's
# checkpoint at half the steps (the learning rate is constant after warm-up there, so that checkpoint is
# the model a half-length run ends with). About 15 minutes (toy2d) and 60 minutes (images, with the
# build) on 2 cores at 8000 steps.
# Usage: scripts/baselines.sh [toy2d|images|all] [steps]        (defaults: all 8000)
# Writes out/baselines/toy2d/{checkerboard.png,metrics.json} and
#        out/baselines/fashion-mnist/{objectives.png,quality.json,training_seconds.txt}.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
steps=${2:-8000}
usage="usage: scripts/baselines.sh [toy2d|images|all] [steps: an even number >= 16]"
case "$what" in toy2d | images | all) ;; *) echo "$usage" >&2; exit 2 ;; esac
if ! [[ "$steps" =~ ^[0-9]+$ ]] || ((steps < 16 || steps % 2 != 0)); then echo "$usage" >&2; exit 2; fi
out=out/baselines
half=$((steps / 2))

if [[ "$what" != images ]]; then
  BUILD_TARGETS=toy2d scripts/build.sh
  build/examples/toy2d --objectives all --steps "$steps" --out "$out/toy2d"
fi

if [[ "$what" != toy2d ]]; then
  scripts/get-data.sh
  BUILD_TARGETS="train_images train_classifier evaluate_images" scripts/build.sh
  d=$out/fashion-mnist
  rm -rf "$d"  # a fresh comparison: no checkpoint of an earlier one is evaluated
  mkdir -p "$d"
  common=(--dataset fashion-mnist --preset tiny --batch 64 --lr 1e-3 --ema 0.995 --sample-every 0 -q)
  train() {  # objective, steps, extra flags...
    local obj=$1 n=$2
    shift 2
    local t0=$SECONDS
    build/examples/train_images "${common[@]}" --objective "$obj" --steps "$n" --out "$d/$obj" "$@"
    echo "$obj: $((SECONDS - t0)) s for $n steps" | tee -a "$d/training_seconds.txt"
  }
  train flow "$steps" --checkpoint-every "$half"
  teacher=$d/flow/checkpoints/step_$half
  train shortcut "$steps" --checkpoint-every 0
  train consistency_training "$steps" --checkpoint-every 0
  train live_reflow "$steps" --checkpoint-every 0
  train progressive_distillation "$half" --checkpoint-every 0 --teacher "$teacher"
  train consistency_distillation "$half" --checkpoint-every 0 --teacher "$teacher"
  train meanflow "$steps" --checkpoint-every 0
  train alpha_flow "$steps" --checkpoint-every 0
  [ -f out/classifier/fashion-mnist.safetensors ] || build/examples/train_classifier --dataset fashion-mnist -q
  models=()
  for obj in shortcut flow progressive_distillation consistency_distillation consistency_training live_reflow \
    meanflow alpha_flow; do
    models+=(--model "$obj=$d/$obj/checkpoints/last")
  done
  build/examples/evaluate_images --dataset fashion-mnist --samples 1000 --steps 1,2,4,8,128 -q "${models[@]}" \
    -o "$d/quality.json" --figure "$d/objectives.png"
fi
