#!/usr/bin/env python3
"""Result-by-result comparison of two `diagnose --parts fills` runs.

Two runs with the same photos, masks and seeds but different settings (say `--layout
biharmonic` against `--layout transport`) see the same holes, noise and sampler draws, so the
difference between them is best judged pair by pair. `diagnose` logs one line per result:

    fill: <photo> #<sample> <method>: hole PSNR 20.31, LPIPS 0.214, texture 1.02, ring 0.98

Save each run's log (`diagnose ... 2> a.log`), then:

    python3 scripts/paired-fills.py a.log[,a2.log ...] b.log[,b2.log ...]

A log with several methods needs the one to compare named (`--a-method "EPS on photo's own
patches"`, likewise `--b-method`); the same log may then stand on both sides.

Logs listed in the same order on both sides are paired file by file (one file per `--seed`);
within a file, results are paired by photo, sample and the order of the photo's holes. Prints,
for hole LPIPS and hole PSNR, the two means, the mean difference B − A with its standard
error, and on how many pairs B is lower.
"""

import argparse
import math
import os
import re
import sys

LINE = re.compile(
    r"fill: (\S+) #(\d+) (.+?): hole PSNR ([-\d.]+|inf), LPIPS ([\d.]+|–)"
)


def load(paths, only):
    """{(file index, photo, sample, hole number): (psnr, lpips)} of one method."""
    found = {m.group(3) for path in paths for m in map(LINE.search, open(path, encoding="utf-8")) if m}
    if only is None:
        if len(found) > 1:
            sys.exit(f"{','.join(paths)} holds several methods ({'; '.join(sorted(found))}): name one with --a-method / --b-method")
        only = next(iter(found), None)
    elif only not in found:
        sys.exit(f"no method {only!r} in {','.join(paths)} (it has: {'; '.join(sorted(found))})")
    out = {}
    for f, path in enumerate(paths):
        with open(path, encoding="utf-8") as log:
            for line in log:
                m = LINE.search(line)
                if not m:
                    continue
                photo, sample, method, psnr, lpips = m.groups()
                if method != only:
                    continue
                key = (f, photo, sample)
                n = 0
                while key + (n,) in out:
                    n += 1
                out[key + (n,)] = (
                    float(psnr),
                    float("nan") if lpips == "–" else float(lpips),
                )
    return out


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a", help="log(s) of run A, comma-separated")
    parser.add_argument("b", help="log(s) of run B, comma-separated")
    parser.add_argument("--a-method", help="the method to take from A's logs")
    parser.add_argument("--b-method", help="the method to take from B's logs")
    args = parser.parse_args()
    a_paths, b_paths = args.a.split(","), args.b.split(",")
    missing = [p for p in a_paths + b_paths if not os.path.isfile(p)]
    if missing:
        sys.exit(f"no such log: {', '.join(missing)} (save a run's log with `diagnose ... 2> run.log`)")
    if len(a_paths) != len(b_paths):
        sys.exit("give as many logs for B as for A (one per seed, in the same order)")
    a, b = load(a_paths, args.a_method), load(b_paths, args.b_method)
    keys = sorted(set(a) & set(b))
    if len(keys) < 2:
        sys.exit("fewer than 2 results in common: were both runs made with the same photos, masks and seeds?")
    if len(keys) < max(len(a), len(b)):
        print(f"note: {max(len(a), len(b)) - len(keys)} results have no partner and are left out")
    for index, name in [(1, "hole LPIPS"), (0, "hole PSNR")]:
        pairs = [(a[k][index], b[k][index]) for k in keys]
        pairs = [(x, y) for x, y in pairs if math.isfinite(x) and math.isfinite(y)]
        n = len(pairs)
        if n < 2:
            print(f"{name}: fewer than 2 finite pairs")
            continue
        diffs = [y - x for x, y in pairs]
        mean = sum(diffs) / n
        se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n)
        print(
            f"{name}: {n} pairs, A {sum(x for x, _ in pairs) / n:.4f}, "
            f"B {sum(y for _, y in pairs) / n:.4f}, B − A {mean:+.4f} ± {se:.4f}, "
            f"B lower on {sum(d < 0 for d in diffs)} of {n}"
        )


if __name__ == "__main__":
    main()
