#!/usr/bin/env bash
# Refreshes vendor/candle-core from the crates.io source of candle-core VERSION, with cudarc's
# `dynamic-linking` swapped for `dynamic-loading` and the gradient-sum patch applied
# (vendor/README.md says why).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: scripts/vendor-candle.sh VERSION}
cargo fetch -q
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"candle-core-$version" | head -1)
[ -d "$src" ] || { echo "candle-core $version is not in the cargo registry; add it to Cargo.toml first" >&2; exit 1; }
rm -rf vendor/candle-core && mkdir -p vendor/candle-core
cp -r "$src/src" "$src/LICENSE" "$src/README.md" vendor/candle-core/
python3 - "$src/Cargo.toml" vendor/candle-core/Cargo.toml <<'PY'
import re, sys
s = open(sys.argv[1]).read()
s = "".join(b for b in re.split(r"(?m)^(?=\[)", s) if not re.match(r"\[\[(example|test|bench)\]\]", b))
if s.count('"dynamic-linking",') != 1:
    sys.exit("candle-core's cudarc features changed: edit vendor/candle-core/Cargo.toml by hand")
open(sys.argv[2], "w").write(s.replace('"dynamic-linking",', '"dynamic-loading",'))
PY
(cd vendor/candle-core && patch -p1 --forward < ../candle-core-gradient-sums.patch) || {
    echo "vendor/candle-core-gradient-sums.patch does not apply to candle-core $version: port it by hand" >&2
    exit 1
}
echo "vendor/candle-core is candle-core $version with cudarc dynamic-loading and the gradient-sum patch"
