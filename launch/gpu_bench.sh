#!/usr/bin/env bash
# Every GPU figure of the benchmark suite in one command, on one GPU:
#   launch/gpu_bench.sh [OUTDIR]          (default: $OUT if set, else bench_results/gpu)
# - posemachine.bench in float32 and in bfloat16 (train step vs PyTorch on the same GPU, MFU
#   against the matmul peak in that dtype, compile times, inference), batch x window
#   64x16 and 1024x16 (SHAPES=64x16,64x243,1024x16 adds the long window; mind the limits);
# - posemachine.bench_refine: the batched correction vs the per-sample loop, width 1024;
# - posemachine.bench_streaming: causal streaming latency vs the memory-bandwidth limit.
# It uses $PYTHON (default python3) as it is: JAX with CUDA, flax, optax, orbax-checkpoint,
# ml-collections and absl-py; PyTorch with CUDA for the ratio rows (without it they read
# "skipped"). Nothing is downloaded. WHEELS=DIR first installs the wheels in DIR offline
# into a private folder, for a machine that lacks a package (e.g. ml-collections).
# Each part has a time limit (480 s in all, 540 s with the probes and kill grace); a part
# that fails or runs out is reported and the rest still run; the exit status is 1 if any
# part failed. posemachine.bench prints each row's JSON as it finishes ("bench row:").
# Output, 6 files: gpu_bench.log (everything printed, nvidia-smi first), bench_f32.json/.md,
# bench_bf16.json/.md, refine.json.
# QUICK=1: tiny shapes, to check the script on a CPU. DRY_RUN=1: print the commands only.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-bench_results/gpu}}
py=${PYTHON:-python3}
if [ "${QUICK:-0}" = 1 ]; then
  shapes=8x4 hidden=16 steps=2 samples=64 loop=8 frames=20 widths=16
else
  shapes=${SHAPES:-64x16,1024x16} hidden=1024 steps=20 samples=4096 loop=256 frames=300
  widths=1024,256
fi

fail=0
part() {  # part NAME SECONDS COMMAND...: run it with a time limit, log it, note a failure
  local name=$1 limit=$2
  shift 2
  if [ "${DRY_RUN:-0}" = 1 ]; then
    echo "$@"
    return
  fi
  echo "== $name ($(date -u +%H:%M:%S), limit ${limit} s): $*" | tee -a "$log"
  timeout -k 10 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "!! $name failed with exit status $rc" | tee -a "$log"
    fail=1
  fi
}

log=$out/gpu_bench.log
if [ "${DRY_RUN:-0}" != 1 ]; then
  mkdir -p "$out"
  : >"$log"
  if [ -n "${WHEELS:-}" ]; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/posemachine_site "$WHEELS"/*.whl >>"$log" 2>&1 || { cat "$log"; exit 1; }
    export PYTHONPATH=/tmp/posemachine_site${PYTHONPATH:+:$PYTHONPATH}
  fi
  { date -u; timeout -k 5 20 nvidia-smi || true
    timeout -k 5 40 "$py" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', \
flax.__version__, 'optax', optax.__version__, jax.devices())"; } >>"$log" 2>&1
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

for dtype in float32 bfloat16; do
  part "bench_$dtype" 170 "$py" -m posemachine.bench --quick --dtype="$dtype" \
    --shapes="$shapes" --hidden="$hidden" --steps="$steps" --out="$out/$dtype"
done
part refine 70 "$py" -m posemachine.bench_refine --samples="$samples" --hidden="$hidden" \
  --window=1 --loop_samples="$loop" --json_out="$out/refine.json"
part streaming 70 "$py" -m posemachine.bench_streaming --hidden="$widths" --frames="$frames"

if [ "${DRY_RUN:-0}" != 1 ]; then
  # Flat names: some file transfers return only a few files, none in deep folders.
  for d in float32:f32 bfloat16:bf16; do
    for ext in json md; do
      [ -f "$out/${d%%:*}/bench.$ext" ] && mv "$out/${d%%:*}/bench.$ext" "$out/bench_${d#*:}.$ext"
    done
    rmdir "$out/${d%%:*}" 2>/dev/null
  done
  echo "gpu_bench: $( ((fail)) && echo 'a part failed' || echo 'all parts ran'); see $log"
fi
exit "$fail"
