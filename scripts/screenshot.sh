#!/usr/bin/env bash
# Takes the README screenshot: the real app in a virtual X display, a stroke painted over the
# ladybird sample, a restoration run to completion, then a capture of the window.
# Needs: xvfb xdotool imagemagick mesa-vulkan-drivers (apt).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/screenshot.png}"
bin="${EPS_STUDIO_BIN:-target/release/eps-studio}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 0700 "$XDG_RUNTIME_DIR"
home="$(mktemp -d)"   # fresh settings and autosave
Xvfb :99 -screen 0 1280x800x24 >/dev/null 2>&1 &
xvfb=$!
trap 'kill $app $xvfb 2>/dev/null || true; rm -rf "$home"' EXIT
sleep 2
export DISPLAY=:99
HOME="$home" XDG_DATA_HOME="$home/data" "$bin" assets/samples/ladybird.jpg &
app=$!
sleep 8
win=$(xdotool search --sync --name "EPS Studio" | head -1)
xdotool windowmove "$win" 0 0 windowsize "$win" 1280 800
sleep 2
# Four brush strokes over the ladybird (the photo is fitted to the canvas of a 1280×800 window).
for y in 385 405 425 445; do
  xdotool mousemove 772 "$y" mousedown 1
  for x in $(seq 772 10 862); do xdotool mousemove "$x" "$y"; sleep 0.02; done
  xdotool mouseup 1
  sleep 0.2
done
sleep 1
# The Restore button (a bare X server has no window manager to give the window keyboard focus).
xdotool mousemove 38 442 click 1
# Wait for the restoration (the progress bar disappears when it is done).
sleep "${WAIT_SECS:-40}"
xdotool mousemove 1200 720
sleep 1
import -window root "$out"
echo "wrote $out"
