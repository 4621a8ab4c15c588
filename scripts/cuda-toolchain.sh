#!/usr/bin/env bash
# Prepares a CUDA 13.0 toolkit from PyPI wheels in $CUDA_TOOLCHAIN (default ~/.cache/eps-studio/cuda),
# enough to compile candle's CUDA kernels with nvcc on a machine without a GPU or driver. Prints
# the CUDA_HOME to use. Nothing is linked against it: the built binary loads the driver and the
# CUDA libraries at run time (vendor/README.md).
set -euo pipefail
ROOT=${CUDA_TOOLCHAIN:-$HOME/.cache/eps-studio/cuda}
H=$ROOT/cuda-home
if [ -x "$H/bin/nvcc" ] && [ -e "$H/static/libcudart.a" ] && "$H/bin/nvcc" --version >/dev/null 2>&1; then
  echo "$H"; exit 0
fi
mkdir -p "$ROOT"
python3 -m venv "$ROOT/venv" >&2
"$ROOT/venv/bin/pip" install -q \
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
  nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88 >&2
SP=$("$ROOT/venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
CU=$SP/nvidia/cu13
rm -rf "$H"; mkdir -p "$H"
ln -s "$CU/bin" "$H/bin"; ln -s "$CU/include" "$H/include"; ln -s "$CU/nvvm" "$H/nvvm"
mkdir -p "$H/lib"
for f in "$CU"/lib/*.so.*; do
  b=$(basename "$f"); ln -s "$f" "$H/lib/$b"; base=${b%%.so*}
  [ -e "$H/lib/$base.so" ] || ln -s "$f" "$H/lib/$base.so"
done
ln -s lib "$H/lib64"
# candle-kernels links its MoE kernels against the CUDA runtime; the static runtime (named so the
# linker takes it for -lcudart) keeps libcudart.so out of the binary's load-time needs: it opens
# the driver itself when first used.
mkdir -p "$H/static"
ln -s "$CU/lib/libcudart_static.a" "$H/static/libcudart.a"
"$H/bin/nvcc" --version | tail -2 >&2
echo "$H"
