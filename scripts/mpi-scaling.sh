#!/usr/bin/env bash
# Weak scaling of data-parallel training on this machine's CPUs: train_images on synthetic 28x28x1
# images (DiT preset tiny) with the same rows per rank on 1 and on 2 MPI ranks, one thread each;
# prints images/s, the scaling efficiency and the all-reduces' share of rank 0's time.
#   scripts/mpi-scaling.sh            (env: PER_RANK=64 STEPS=40 PRESET=tiny RANKS="1 2" TRAIN_IMAGES=...)
set -euo pipefail
cd "$(dirname "$0")/.."
per_rank=${PER_RANK:-64}
steps=${STEPS:-40}
preset=${PRESET:-tiny}
ranks_list=${RANKS:-"1 2"}
train=${TRAIN_IMAGES:-build/examples/train_images}
if [ -z "${TRAIN_IMAGES:-}" ]; then BUILD_TARGETS=train_images scripts/build.sh; fi
py=""
for p in python3 /usr/bin/python3; do
  if "$p" -c "import numpy" 2>/dev/null; then py=$p; break; fi
done
[ -n "$py" ] || { echo "needs python3 with numpy (scripts/deps.sh installs python3-numpy)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" -c "import numpy as np, sys; r = np.random.default_rng(0)
np.save(sys.argv[1] + '/x.npy', r.integers(0, 256, (2048, 28, 28, 1), dtype=np.uint8))
np.save(sys.argv[1] + '/y.npy', (np.arange(2048) % 10).astype(np.int64))" "$work"
flags=()
case "$(mpiexec --version 2>/dev/null || true)" in *"Open MPI"* | *OpenRTE*) flags=(--oversubscribe --allow-run-as-root) ;; esac
export OMP_NUM_THREADS=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
for n in $ranks_list; do
  mpiexec "${flags[@]}" -n "$n" "$train" --data-file "$work/x.npy" --labels-file "$work/y.npy" --preset "$preset" \
    --batch $((per_rank * n)) --steps "$steps" --sample-every 0 --checkpoint-every 0 --log-every 1 -q \
    -o "$work/r$n" >/dev/null
done
"$py" - "$work" "$per_rank" "$steps" $ranks_list <<'PY'
import json, sys
work, per, steps, ranks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), [int(r) for r in sys.argv[4:]]
print(f"| ranks | global batch | images/s | efficiency | all-reduce share of rank 0's time |")
print(f"|---|---|---|---|---|")
base = None
for n in ranks:
    lines = [json.loads(l) for l in open(f"{work}/r{n}/metrics.jsonl")]
    first, last = lines[min(4, len(lines) - 2)], lines[-1]  # the first steps warm up: leave them out
    secs = last["seconds"] - first["seconds"]
    ips = (last["step"] - first["step"]) * per * n / secs
    share = (last.get("allreduce_seconds", 0) - first.get("allreduce_seconds", 0)) / secs
    base = base or ips / n
    print(f"| {n} | {per * n} | {ips:.1f} | {ips / (n * base):.2f} | {share:.1%} |")
PY
