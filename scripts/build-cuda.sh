#!/usr/bin/env bash
# Builds the command-line binary with candle's CUDA backend for one GPU generation, stripped and
# xz-compressed in dist/ (its `selftest` command runs the device checks of tests/device.rs):
#
#   scripts/build-cuda.sh            # compute capability 9.0 (H100, H200)
#   CUDA_COMPUTE_CAP=89 scripts/build-cuda.sh
#
# Needs no GPU and no driver: nvcc comes from PyPI wheels (scripts/cuda-toolchain.sh), and the
# binary loads libcuda, cuBLAS, cuRAND and NVRTC at run time, so it also starts (and falls back
# to the CPU with a note) on a machine without them. A clean build takes ~20 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
CUDA_HOME=$(scripts/cuda-toolchain.sh)
export CUDA_HOME CUDA_PATH=$CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"
target=target/cuda
features=(--no-default-features --features cuda)
# -L only for the final link: the static CUDA runtime stands in for -lcudart (cuda-toolchain.sh).
cargo rustc --release "${features[@]}" --target-dir "$target" --bin eps-studio -- \
  -L "native=$CUDA_HOME/static"
if readelf -d "$target/release/eps-studio" | grep -E 'NEEDED.*(cuda|cublas|curand|nvrtc)'; then
  echo "error: the binary names CUDA libraries as load-time needs; it would not start without them" >&2
  exit 1
fi
mkdir -p dist
strip -o dist/eps-studio-cuda "$target/release/eps-studio"
xz -T0 -6 -f -k dist/eps-studio-cuda
echo "dist/eps-studio-cuda: $(du -h dist/eps-studio-cuda | cut -f1) stripped, $(du -h dist/eps-studio-cuda.xz | cut -f1) xz"
# It starts without a driver: where there is none it says so and falls back to the CPU.
dist/eps-studio-cuda --version
if ! dist/eps-studio-cuda selftest --device cuda; then
  echo "(expected where there is no NVIDIA GPU: the CUDA build started and named what is missing)"
fi
