#!/usr/bin/env bash
# The one command a GPU machine runs: self-test on CUDA, train the EPS network for a wall-clock
# budget from the shipped weights, evaluate the new and the shipped weights on the same fixed
# validation subset, benchmark, and leave at most 8 files of at most 16 MiB in $OUT.
#
# On the GPU machine (the checkout plus, carried, dist/eps-studio-cuda.xz and data/photos.pack):
#
#   OUT=$OUT scripts/gpu-run.sh --minutes 4
#
# Rehearsal here, same binary on the CPU (build it first with scripts/build-cuda.sh):
#
#   scripts/gpu-run.sh --cpu --minutes 1
#
# Every phase has its own time limit and the run goes on past a failed phase, so one failure
# still brings back everything else. docs/gpu-run.md lists what comes back and how to use it.
set -uo pipefail
cd "$(dirname "$0")/.."

device=cuda minutes=4 batch=64 eval_images=32 repeats=5
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) device=cpu batch=16 eval_images=8 repeats=2 ;;
    --minutes) minutes=$2; shift ;;
    --batch) batch=$2; shift ;;
    *) echo "usage: scripts/gpu-run.sh [--cpu] [--minutes M] [--batch B]" >&2; exit 2 ;;
  esac
  shift
done

OUT=${OUT:-runs/gpu-rehearsal}
mkdir -p "$OUT"
rm -f "$OUT"/{log.txt,selftest.txt,eps-gpu.safetensors,loss.csv,eval.md,bench.md}
exec > >(tee -a "$OUT/log.txt") 2>&1
work=${TMPDIR:-/tmp}/eps-gpu-run
mkdir -p "$work"
started=$(date +%s)
failures=0

# phase NAME SECONDS COMMAND...: runs COMMAND under a time limit and reports how it ended.
phase() {
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s)
  echo "== $name (limit ${limit} s): $*"
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - t0 )) s"
  [ "$rc" = 0 ] || failures=$((failures + 1))
  return 0
}

echo "== $(date -u +%FT%TZ) on $(hostname), $(nproc) cores, device $device, $minutes min of training, batch $batch"

# What travels to the GPU machine must fit its 64 MiB (tracked files, untracked files that are
# not ignored, and the carried binary and photo pack); checked where git is.
if command -v git >/dev/null && git rev-parse --git-dir >/dev/null 2>&1; then
  travelling=$( (git ls-files -co --exclude-standard -z; printf '%s\0' dist/eps-studio-cuda.xz data/photos.pack) \
    | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  echo "travelling to the GPU machine: $((travelling / 1048576)) MiB of 64 MiB"
  [ "$travelling" -le $((64 * 1048576)) ] || { echo "error: over the 64 MiB a run may carry" >&2; exit 1; }
fi

# The binary: the compressed CUDA build, or (rehearsal without one) the release build here.
bin=$work/eps-studio
if [ -f dist/eps-studio-cuda.xz ]; then
  if command -v xz >/dev/null; then
    xz -dc dist/eps-studio-cuda.xz > "$bin"
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      dist/eps-studio-cuda.xz "$bin"
  fi
  chmod +x "$bin"
elif [ "$device" = cpu ] && [ -x target/release/eps-studio ]; then
  echo "no dist/eps-studio-cuda.xz: rehearsing with target/release/eps-studio"
  cp target/release/eps-studio "$bin"
else
  echo "error: dist/eps-studio-cuda.xz is missing: run scripts/build-cuda.sh and carry dist/eps-studio-cuda.xz" >&2
  exit 1
fi
[ -f data/photos.pack ] || { echo "error: data/photos.pack is missing: run scripts/fetch-photos.sh and eps-studio data, and carry data/photos.pack" >&2; exit 1; }
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export EPS_STUDIO_WEIGHTS=$PWD/assets
"$bin" --version
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
fi

# 1. The self-test: networks, restorations and both training stages on the device.
phase selftest 300 bash -c "'$bin' selftest --device $device | tee '$OUT/selftest.txt'"

# 2. Training from the shipped EPS weights (a fresh optimiser), checkpointing every minute; a
#    second call on the same machine resumes from $work/train.
phase train $((minutes * 60 + 180)) "$bin" train --stage eps --init assets/eps.safetensors \
  --out "$work/train" --device "$device" --minutes "$minutes" --checkpoint-minutes 1 \
  --batch "$batch" --steps 1000000 --lr 2e-4 --warmup 100 --lr-decay 2000 \
  --val-every 200 --checkpoint-every 1000000
if [ -f "$work/train/final.safetensors" ]; then
  cp "$work/train/final.safetensors" "$OUT/eps-gpu.safetensors"
  cp "$work/train/loss.csv" "$OUT/loss.csv"
fi

# 3. The same fixed validation subset for the shipped and the new weights.
eval_args=(--device "$device" --images "$eval_images" --samples 2 --methods eps,eps-mean
  --tasks inpaint-box,inpaint-brush,deblur-gaussian,sr-x4 --no-features --out "$OUT/eval.md" --append)
phase eval-shipped 300 "$bin" eval "${eval_args[@]}" --eps assets/eps.safetensors --title "Shipped EPS weights"
if [ -f "$OUT/eps-gpu.safetensors" ]; then
  phase eval-new 300 "$bin" eval "${eval_args[@]}" --eps "$OUT/eps-gpu.safetensors" --title "EPS weights after this run"
fi

# 4. Speed on the device: step costs, forward TFLOP/s, 256² restorations of 1 and 16 samples.
phase bench 300 "$bin" bench --device "$device" --size 256 --repeats "$repeats" --out "$OUT/bench.md" --overwrite

# What comes back: at most 8 files of at most 16 MiB.
echo "== $(( $(date +%s) - started )) s in all, $failures phase(s) failed; in $OUT:"
ls -l "$OUT"
count=$(find "$OUT" -type f | wc -l)
big=$(find "$OUT" -type f -size +16M | wc -l)
[ "$count" -le 8 ] && [ "$big" = 0 ] || echo "warning: $count files, $big over 16 MiB: not all will come back"
exit $(( failures > 0 ))
