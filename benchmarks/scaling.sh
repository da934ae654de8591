#!/bin/bash
# benchmarks/scaling.sh - the scheduler's thread-scaling curve (issue 4):
# the SimpleCNN (train and infer, scheduler off and on, PyTorch interleaved
# when python3 can import torch), inception_bench, dag_parallel and
# ResNet-18 training. Prints one line per measurement.
#
#   make benchmarks/cnn_bench benchmarks/dag_parallel benchmarks/inception_bench tools/loom
#   benchmarks/scaling.sh [THREADS...]        (default: 16 8 4 2 1)
#
# PASSES (default 2) passes are made over the thread counts above 2, since
# a shared machine is noisy. BIN (default: the build tree) is where the
# programs are; RUN is a prefix for each program (e.g. a dynamic loader
# with --library-path, to run a build carried to another machine).
# docs/runtime.md section 9 has results.
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-.}
RUN=${RUN:-}
PASSES=${PASSES:-2}
threads=${*:-16 8 4 2 1}
find_bin() { if [ -x "$BIN/$1" ]; then echo "$BIN/$1"; else echo "$BIN/$(basename "$1")"; fi; }
have_torch() { python3 -c "import torch" 2>/dev/null; }
cnn() { # T W train|infer iters
  LOOM_NUM_WORKERS=$2 timeout 120 $RUN "$(find_bin benchmarks/cnn_bench)" --threads "$1" --bench "$3" --blocks 5 --iters "$4" 2>&1 |
    tail -1 | sed "s/^/$3 T=$1 W=$2 /"
}
tor() { have_torch && timeout 120 python3 benchmarks/cnn_torch.py --threads "$1" --blocks 5 --iters 5 2>&1 | tail -2 | sed "s/^/T=$1 /"; }
one() {
  cnn "$1" 1 train 5; [ "$1" = 1 ] || cnn "$1" "$1" train 5; tor "$1"
  cnn "$1" 1 infer 2; [ "$1" = 1 ] || cnn "$1" "$1" infer 2
}
echo "== machine"; nproc; lscpu 2>/dev/null | grep -E "Model name|Socket|NUMA node\(s\)"
$RUN "$(find_bin tools/loom)" info 2>&1 | head -8
for pass in $(seq "$PASSES"); do for T in $threads; do [ "$T" -gt 2 ] && one "$T"; done; done
for T in $threads; do [ "$T" -le 2 ] && one "$T"; done
for T in $threads; do
  [ "$T" -ge 8 ] || continue
  for B in 1 8 32; do
    timeout 120 $RUN "$(find_bin benchmarks/inception_bench)" --threads "$T" --batch $B --reps 7 2>&1 | tail -1 | sed "s/^/T=$T /"
  done
done
for T in $threads; do
  [ "$T" -ge 2 ] && LOOM_NUM_THREADS=$T timeout 120 $RUN "$(find_bin benchmarks/dag_parallel)" --reps 10 2>&1 | tail -1
done
T=$(echo "$threads" | tr ' ' '\n' | sort -n | tail -1)
for W in 1 "$T"; do
  LOOM_NUM_WORKERS=$W timeout 180 $RUN "$(find_bin tools/loom)" bench --model resnet18 --mode train --batch 32 --threads "$T" \
    --warmup 1 --min-time 3 2>&1 | tail -1 | sed "s/^/W=$W /"
done
have_torch && timeout 180 python3 benchmarks/torch_bench.py --model resnet18 --mode train --batch 32 --threads "$T" 2>&1 | tail -1
echo "== done"
