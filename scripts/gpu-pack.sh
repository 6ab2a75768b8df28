#!/usr/bin/env bash
# Prepares .gpu/ for a GPU session, here (a machine with nvcc 13 and apt): the GPU machine has no
# package registry and a short device-time budget, so the CUDA programs are built here for sm_90
# (its nvcc is 13.0 too) and travel with the shared libraries they need beyond the CUDA toolkit, with
# the Fashion-MNIST files (xz), the classifier weights for the quality metric and the PyTorch peer.
# .deps/ (../shared/tools/device-deps.sh) is prepared too, for a build there if the binaries won't run.
# Then: device run, carry [".gpu", ".deps"], command "scripts/gpu-session.sh [budget_s] [steps]".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh xz-utils
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
build=build-gpu
# SHORTCUT_NATIVE=OFF: the programs run on the GPU machine's CPU, not this one's
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSHORTCUT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DSHORTCUT_NATIVE=OFF >/dev/null
programs=(gpu_tests kernels_bench end_to_end_bench train_images sample_images evaluate_images)
cmake --build "$build" -j "${JOBS:-$(nproc)}" --target "${programs[@]}"

rm -rf .gpu
mkdir -p .gpu/bin .gpu/lib .gpu/data/fashion-mnist .gpu/peer
for p in "${programs[@]}"; do
  f=$(find "$build" -type f -name "$p" -perm -u+x | head -1)
  strip --strip-debug -o ".gpu/bin/$p" "$f"  # host debug info only; the device code keeps -lineinfo
done
# shared libraries outside glibc and the CUDA toolkit (Google Benchmark, libgomp, libstdc++, ...);
# not cuDNN, whose engine libraries load at run time: gpu-session.sh finds the device image's
ldd .gpu/bin/* | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libcuda.so*|libcudart*|libcublas*|libcudnn*) ;;
    *) cp -L "$lib" .gpu/lib/ ;;
  esac
done
# one xz archive: the binaries are mostly zero-padded fatbins (25 MB -> 4 MB), and a device call
# carries 64 MiB at most
tar -cJf .gpu/programs.tar.xz -C .gpu bin lib
rm -rf .gpu/bin .gpu/lib
scripts/get-data.sh >/dev/null
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  xz -T"${JOBS:-$(nproc)}" -6 -c "data/fashion-mnist/$f" > ".gpu/data/fashion-mnist/$f.xz"
done
if [ ! -f out/classifier/fashion-mnist.safetensors ]; then
  BUILD_TARGETS=train_classifier scripts/build.sh
  build/examples/train_classifier --dataset fashion-mnist -q
fi
cp out/classifier/fashion-mnist.safetensors .gpu/classifier-fashion-mnist.safetensors
peer=${PEER:-../shared/peers/torch_shortcut.py}
[ -f "$peer" ] && cp "$peer" .gpu/peer/ || echo "warning: no PyTorch peer at $peer (set PEER=...)" >&2
git rev-parse --short HEAD > .gpu/commit
git diff --quiet HEAD || echo "+uncommitted" >> .gpu/commit
[ -x ../shared/tools/device-deps.sh ] && ../shared/tools/device-deps.sh >/dev/null
du -sh .gpu .deps 2>/dev/null
echo "to carry: .gpu and .deps, $(du -sch .gpu .deps 2>/dev/null | tail -1 | cut -f1) together (the limit is 64 MiB with the working tree)"
