#!/usr/bin/env bash
# Writes a CREDITS list (one line per photo: source package, author, licence) for the photos in
# PHOTO_DIR, reading authors and licences from the unpacked packages' copyright files in DEB_ROOT.
#
# usage: scripts/credits.sh PHOTO_DIR DEB_ROOT > CREDITS
set -euo pipefail
out=$1
root=$2
echo "Photographs used to train EPS Studio's denoiser, all from Debian packages:"
echo
for f in "$out"/*.*; do
  base=$(basename "$f"); name=${base%.*}; src=${name%%__*}; file=${name#*__}
  case "$src" in
    enlightenment) echo "- $base: enlightenment-data (Enlightenment project), BSD-2-Clause" ;;
    plasma) echo "- $base: plasma-workspace-wallpapers (KDE), LGPL-3.0 / GPL-2.0+" ;;
    mate) echo "- $base: mate-backgrounds (MATE desktop), GPL-2.0+" ;;
    lomiri)
      stanza=$(awk -v f="/$file." 'index($0, "Files:") == 1 && index($0, f) { hit = 1; next }
                              hit && /^Copyright:/ { c = substr($0, 12) }
                              hit && /^License:/ { print c ", " substr($0, 10); exit }' \
        "$root"/lomiri-wallpapers-*/usr/share/doc/lomiri-wallpapers-*/copyright)
      echo "- $base: lomiri-wallpapers, © ${stanza:-see the copyright file of the package}" ;;
  esac
done
