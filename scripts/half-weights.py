#!/usr/bin/env python3
"""Rewrites safetensors files with every F32 tensor stored as F16 (round to nearest even), keeping
the metadata: `scripts/half-weights.py assets/prior.safetensors ...`. The networks load either and
compute in f32; `eps-studio train` already writes F16 weight files."""
import json
import os
import struct
import sys


def halve(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out_header, chunks, offset = {}, [], 0
    for name in sorted(k for k in header if k != "__metadata__"):
        info = header[name]
        start, end = info["data_offsets"]
        blob = data[start:end]
        if info["dtype"] == "F32":
            count = len(blob) // 4
            blob = struct.pack(f"<{count}e", *struct.unpack(f"<{count}f", blob))
            info = dict(info, dtype="F16")
        out_header[name] = dict(info, data_offsets=[offset, offset + len(blob)])
        chunks.append(blob)
        offset += len(blob)
    if "__metadata__" in header:
        out_header["__metadata__"] = header["__metadata__"]
    text = json.dumps(out_header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))
    os.replace(tmp, path)
    print(f"{path}: {len(raw)} → {os.path.getsize(path)} bytes")


for p in sys.argv[1:]:
    halve(p)
