#!/usr/bin/env bash
# Fetches the 52 photographs that ship inside Debian packages (see docs/data.md) into one folder,
# with a CREDITS file. Downloads the .deb files with apt-get (no installation), except libedje-bin,
# whose edje_decc unpacks the Enlightenment backgrounds.
#
# usage: scripts/fetch-photos.sh [OUT_DIR]     (default: data/photos; cache in data/debs)
set -euo pipefail

out=${1:-data/photos}
cache=${EPS_DEB_CACHE:-data/debs}
mkdir -p "$out" "$cache"
out=$(cd "$out" && pwd)
cache=$(cd "$cache" && pwd)

packages=(enlightenment-data lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 plasma-workspace-wallpapers mate-backgrounds)

echo "downloading ${packages[*]} into $cache"
(cd "$cache" && for p in "${packages[@]}"; do ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download "$p"; done)
# Each package unpacked on its own, so a file is taken from the package that documents it.
root="$cache/root"
rm -rf "$root" && mkdir -p "$root"
for p in "${packages[@]}"; do dpkg-deb -x "$(ls "$cache/${p}"_*.deb | head -n 1)" "$root/$p"; done

copy() { # source, name
  local ext="${1##*.}"
  cp "$1" "$out/$2.${ext,,}"
}

# lomiri-wallpapers-16.04: every *_by_* photograph but 'umang' (abstract art);
# lomiri-wallpapers-20.04: only Kleiber (its other three wallpapers are art).
for f in "$root"/lomiri-wallpapers-16.04/usr/share/backgrounds/*_by_*.jpg; do
  name=$(basename "$f" .jpg)
  case "$name" in *umang*) continue ;; esac
  copy "$f" "lomiri__$name"
done
copy "$root/lomiri-wallpapers-20.04/usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg" "lomiri__Kleiber_by_Lukas_Baubkus"

# plasma-workspace-wallpapers: the photographs (the other wallpapers are renders); largest file.
for name in BytheWater ColdRipple ColorfulCups DarkestHour EveningGlow FallenLeaf Grey Kite OneStandsOut Path summer_1am; do
  f=$(ls -S "$root/plasma-workspace-wallpapers/usr/share/wallpapers/$name/contents/images/"* | head -n 1)
  copy "$f" "plasma__$name"
done

# mate-backgrounds: everything under nature/.
for f in "$root"/mate-backgrounds/usr/share/backgrounds/mate/nature/*; do
  base=$(basename "$f"); copy "$f" "mate__${base%.*}"
done

# enlightenment-data: images inside .edj files, unpacked with edje_decc.
if ! command -v edje_decc >/dev/null 2>&1; then
  echo "installing libedje-bin for edje_decc"
  apt-get install -y --no-install-recommends libedje-bin >/dev/null
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for name in Bamboo Foggy-Trees God-Rays Green-Maple Lichen-Branches Mountain Peaks Red-Maple Sea-of-Lanterns Snow-Trees Spruce-Needles Sunset-Clouds White-Flower Yellow-Flower; do
  edj="$root/enlightenment-data/usr/share/enlightenment/data/backgrounds/$name.edj"
  (cd "$tmp" && edje_decc "$edj" -output "$tmp/$name" >/dev/null 2>&1)
  f=$(find "$tmp/$name" -type f \( -iname '*.png' -o -iname '*.jpg' \) -printf '%s %p\n' | sort -n | tail -n 1 | cut -d' ' -f2-)
  copy "$f" "enlightenment__$name"
done

"$(dirname "$0")/credits.sh" "$out" "$root" > "$tmp/CREDITS"
mv "$tmp/CREDITS" "$out/CREDITS"
echo "$(ls "$out" | grep -vc CREDITS) photos in $out"
