#!/usr/bin/env python3
"""CBM3D reference for `eps-studio diagnose`'s denoising curve (a measurement script, never a
dependency of EPS Studio).

usage: pip install bm3d numpy
       eps-studio diagnose --parts curve --export-noisy DIR
       scripts/cbm3d.py DIR docs/diagnose/cbm3d.json

Reads DIR/clean.npy and DIR/noisy-SIGMA.npy ([N, H, W, 3] float32 in [0, 1], written by
`diagnose`; SIGMA is on the [-1, 1] scale, so the noise standard deviation in [0, 1] units is
SIGMA / 2), denoises every crop with CBM3D given the true noise level, and writes the mean PSNR
per SIGMA (outputs clipped to [0, 1], as the network's are) with the crops' fingerprint.
"""
import json
import pathlib
import sys

import bm3d
import numpy as np


def psnr(x, ref):
    mse = np.mean((np.clip(x, 0.0, 1.0) - ref) ** 2)
    return -10.0 * np.log10(mse)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    clean = np.load(src / "clean.npy").astype(np.float64)
    result = {"fingerprint": (src / "fingerprint.txt").read_text().strip(), "psnr": {}}
    for path in sorted(src.glob("noisy-*.npy"), key=lambda p: float(p.stem[6:])):
        sigma = float(path.stem[len("noisy-"):])
        noisy = np.load(path).astype(np.float64)
        scores = [
            psnr(bm3d.bm3d_rgb(noisy[i], sigma_psd=sigma / 2.0), clean[i])
            for i in range(len(clean))
        ]
        result["psnr"][repr(sigma)] = float(np.mean(scores))
        print(f"σ = {sigma}: CBM3D {result['psnr'][repr(sigma)]:.2f} dB over {len(clean)} crops")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
