#!/usr/bin/env bash
# The CPU image experiment of docs/images.md: a tiny class-conditional DiT trained as a shortcut model
# and as plain flow matching with the same budget on Fashion-MNIST (or the dataset given), then the
# classifier and the quality metric at every checkpoint. About 40 minutes on 2 cores.
# Usage: scripts/images-cpu.sh [dataset] [steps]
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=${1:-fashion-mnist}
steps=${2:-8000}
every=$((steps / 4))
scripts/get-data.sh
BUILD_TARGETS="train_images sample_images train_classifier evaluate_images" scripts/build.sh
out=out/images-cpu
common=(--dataset "$dataset" --preset tiny --steps "$steps" --batch 64 --lr 1e-3 --ema 0.995
        --checkpoint-every "$every" --sample-every "$every" -q)
rm -rf "$out"  # a fresh experiment: no checkpoint folder or sample grid of an earlier one is evaluated
for obj in shortcut flow; do
  /usr/bin/time -f "$obj training: %e s" build/examples/train_images "${common[@]}" --objective "$obj" \
    --out "$out/$dataset-$obj"
done
[ -f "out/classifier/$dataset.safetensors" ] || build/examples/train_classifier --dataset "$dataset" -q
# quality against training steps (1, 4, 128 sampling steps) at every checkpoint, then the final table
for s in $(seq "$every" "$every" "$steps"); do
  ck=checkpoints/step_$s
  build/examples/evaluate_images --dataset "$dataset" --samples 500 --steps 1,4,128 -q \
    --model "shortcut=$out/$dataset-shortcut/$ck" --model "flow=$out/$dataset-flow/$ck" -o "$out/quality_step_$s.json"
done
build/examples/evaluate_images --dataset "$dataset" --samples 1000 -q \
  --model "shortcut=$out/$dataset-shortcut/checkpoints/last" --model "flow=$out/$dataset-flow/checkpoints/last" \
  -o "$out/quality.json"
