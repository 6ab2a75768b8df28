#!/usr/bin/env bash
# A whole GPU session in one device call, most important first, under a time budget: each step runs
# only if its minimum time is left and is cut off (timeout) at what is left, so the call always ends
# in time with its logs. Steps (default order):
#   tests     GPU tests: every kernel vs the CPU reference, networks, training steps, the sampler
#   e2e       end_to_end_bench: training step and 1/4/128-step sampling, mnist-S2 and latent-B2
#   peer      the PyTorch peer (torch_shortcut.py) on the same configurations, eager and compiled
#   kernels   kernels_bench: each kernel against the unfused GPU version, the CPU op and the ceilings
#   sanitize  compute-sanitizer memcheck and racecheck on the kernel tests
#   images    DiT-S/4 on Fashion-MNIST for IMAGES_MINUTES (default: what is left) in IMAGES_PRECISION
#             (default bf16), grids, quality.json
# Needs .gpu/ from scripts/gpu-pack.sh (binaries for sm_90, data, classifier, peer); builds here with
# .deps/ if the binaries do not run. Results: $OUT/summary.txt, $OUT/session.log, $OUT/results.tar.gz.
# Usage: scripts/gpu-session.sh [budget_seconds=540] [steps=tests,e2e,peer,kernels,sanitize,images]
set -uo pipefail
cd "$(dirname "$0")/.."
budget=${1:-540}
steps=${2:-tests,e2e,peer,kernels,sanitize,images}
start=$(date +%s)
out=${OUT:-out/gpu-session}
work=out/gpu-session-work
rm -rf "$work"
mkdir -p "$out" "$work"
log=$out/session.log
summary=$work/summary.txt
: > "$log"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
export LD_LIBRARY_PATH=$PWD/.gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# cuDNN (the fused-attention reference of gpu_tests and kernels_bench) is not packed: libcudnn loads
# its engine libraries (hundreds of MB) at run time, and the device image has PyTorch's (pip
# nvidia-cudnn-cu13): put that directory on the path where it exists
cudnn_lib=$(python3 -c "import nvidia.cudnn, os; print(os.path.join(list(nvidia.cudnn.__path__)[0], 'lib'))" 2>/dev/null || true)
[ -n "$cudnn_lib" ] && [ -d "$cudnn_lib" ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$cudnn_lib
bin=$PWD/.gpu/bin

left() { echo $((budget - ($(date +%s) - start))); }
note() { echo "$*" | tee -a "$summary" >> "$log"; }
# run NAME MIN_SECONDS MAX_SECONDS command...: skipped when under MIN_SECONDS are left
run() {
  local name=$1 min=$2 max=$3
  shift 3
  local l
  l=$(left)
  if [ "$l" -lt "$min" ]; then note "$name: skipped ($l s left, needs $min)"; return 1; fi
  [ "$max" -gt "$l" ] && max=$l
  echo "=== $name (limit $max s): $*" >> "$log"
  local t0=$(date +%s)
  timeout "$max" "$@" >> "$log" 2>&1
  local rc=$?
  note "$name: exit $rc in $(($(date +%s) - t0)) s$([ $rc = 124 ] && echo ' (timed out)')"
  return $rc
}
want() { [[ ",$steps," == *",$1,"* ]]; }

{
  echo "commit $(cat .gpu/commit 2>/dev/null | tr '\n' ' ')"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  nvcc --version | tail -1
} 2>&1 | tee -a "$summary" >> "$log"
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)

# the programs and the data, unpacked (xz, else Python's lzma)
if [ -f .gpu/programs.tar.xz ]; then
  tar -xJf .gpu/programs.tar.xz -C .gpu 2>> "$log" ||
    python3 -c "import tarfile; tarfile.open('.gpu/programs.tar.xz').extractall('.gpu')"
fi
mkdir -p data/fashion-mnist
for f in .gpu/data/fashion-mnist/*.xz; do
  [ -f "$f" ] || continue
  dst=data/fashion-mnist/$(basename "$f" .xz)
  xz -dc "$f" > "$dst" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())" "$f" "$dst"
done

# prebuilt binaries, or a build here
# (the programs load: no missing library, and one runs; gpu_tests itself exits 77 without a device)
if ldd "$bin"/* 2>&1 | grep -q "not found" || ! "$bin/end_to_end_bench" --benchmark_list_tests > /dev/null 2>> "$log"; then
  note "prebuilt binaries do not run here: building"
  run build 120 420 bash -c "cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSHORTCUT_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_PREFIX_PATH=$PWD/.deps/usr && cmake --build build-gpu -j $(nproc) \
    --target gpu_tests kernels_bench end_to_end_bench train_images sample_images evaluate_images" || true
  mkdir -p build-gpu/bin
  for p in gpu_tests kernels_bench end_to_end_bench train_images sample_images evaluate_images; do
    f=$(find build-gpu -type f -name "$p" -perm -u+x | head -1)
    [ -n "$f" ] && cp "$f" build-gpu/bin/
  done
  bin=$PWD/build-gpu/bin
fi

if want tests; then
  run tests 60 300 "$bin/gpu_tests" --durations yes
  grep -E "^(All tests passed|test cases:)" "$log" | tail -1 | tee -a "$summary"
  echo "worst relative errors:" >> "$summary"
  grep "rel err" "$log" | awk '{for (i=1;i<=NF;i++) if ($i=="err") print $(i+1), $0}' | sort -g | tail -5 | cut -d' ' -f2- >> "$summary"
fi
table() {
  python3 scripts/perf_table.py --end-to-end "$work/e2e.json" --peer "$work/peer.jsonl" --kernels "$work/kernels.json" \
    --kernels "$work/kernels_cpu.json" \
    --card "$card" --commit "$(head -1 .gpu/commit 2>/dev/null)" > "$work/table.md" 2>> "$log"
}
if want e2e; then
  run e2e 60 240 "$bin/end_to_end_bench" --benchmark_out="$work/e2e.json" --benchmark_out_format=json
fi
if want peer; then
  peer=$(ls .gpu/peer/torch_shortcut.py ../shared/peers/torch_shortcut.py 2>/dev/null | head -1)
  if [ -n "$peer" ]; then
    run peer 90 300 bash -c "set -o pipefail; python3 '$peer' --configs mnist-S2,latent-B2 --modes ${PEER_MODES:-eager,compile} \
      --dtypes ${PEER_DTYPES:-tf32,bf16} | tee '$work/peer.jsonl'"
  else
    note "peer: skipped (no torch_shortcut.py in .gpu/peer)"
  fi
fi
table
if want kernels; then
  # the GPU implementations and the ceilings, then the CPU op at the same shapes (seconds per call at
  # the largest shapes: once each, in its own file, so that a cut-off run loses only those)
  run kernels 60 150 "$bin/kernels_bench" --benchmark_filter=-/cpu/ --benchmark_repetitions=3 \
    --benchmark_report_aggregates_only=true --benchmark_min_time=0.05 \
    --benchmark_out="$work/kernels.json" --benchmark_out_format=json
  table
  run kernels-cpu 40 150 "$bin/kernels_bench" --benchmark_filter=/cpu/ --benchmark_min_time=0.01 \
    --benchmark_out="$work/kernels_cpu.json" --benchmark_out_format=json
  table
fi
if want sanitize; then
  sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  run memcheck 60 150 "$sanitizer" --tool memcheck --error-exitcode 3 "$bin/gpu_tests" "[ops],[adaln],[attention]~[large],[sampler]~[errors]"
  run racecheck 60 120 "$sanitizer" --tool racecheck --racecheck-report all --error-exitcode 3 "$bin/gpu_tests" \
    "[attention]~[large],[adaln],[targets],[bf16]~[training]"
  grep -h "ERROR SUMMARY" "$log" | tee -a "$summary" > /dev/null
fi
if want images; then
  # what is left after the evaluation's share (about 90 s), or IMAGES_MINUTES
  minutes=${IMAGES_MINUTES:-$(python3 -c "print(max(0.5, ($(left) - 120) / 60))")}
  img=$work/images
  run images-train 90 $(( $(left) - 60 )) "$bin/train_images" --device cuda --precision "${IMAGES_PRECISION:-bf16}" --dataset fashion-mnist \
    --preset DiT-S/4 --batch 256 --lr 3e-4 --warmup 200 --ema 0.999 --minutes "$minutes" --steps 1000000 \
    --checkpoint-every 0 --sample-every 1000000 --per-class 8 -q --out "$img/shortcut"
  tail -1 "$img/shortcut/metrics.jsonl" 2>/dev/null | tee -a "$summary"
  run images-eval 30 120 "$bin/evaluate_images" --device cuda --dataset fashion-mnist \
    --classifier .gpu/classifier-fashion-mnist.safetensors --samples 1000 --chunk 500 -q \
    --model "shortcut=$img/shortcut/checkpoints/last" -o "$work/quality.json"
  cat "$work/quality.json" >> "$summary" 2>/dev/null
fi
[ -f "$work/table.md" ] && cat "$work/table.md" >> "$summary"
cp "$summary" "$out/summary.txt"
tar czf "$out/results.tar.gz" --exclude="*.safetensors" -C "$work" . 2>> "$log"
echo "session used $(( $(date +%s) - start )) s of $budget" | tee -a "$out/summary.txt"
