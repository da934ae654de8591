#!/bin/bash
# benchmarks/scaling.sh - the scheduler's thread-scaling curve (issue 4):
# dag_parallel, the SimpleCNN (train and infer, scheduler off and on) and
# inception_bench at 1, 2, 4, 8 and 16 threads, plus PyTorch's SimpleCNN
# when python3 can import torch. JSON lines on stdout, "== T=..." headers.
#
#   make benchmarks/cnn_bench benchmarks/dag_parallel benchmarks/inception_bench \
#        benchmarks/node_overhead tools/loom
#   benchmarks/scaling.sh [THREADS...]        (default: 1 2 4 8 16)
#
# BIN (default: the build tree) is where the programs are; RUN is a prefix
# for each program (e.g. a dynamic loader with --library-path, to run a
# build carried to another machine). docs/runtime.md section 9 has results.
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-.}
RUN=${RUN:-}
threads=${*:-1 2 4 8 16}
find_bin() { if [ -x "$BIN/$1" ]; then echo "$BIN/$1"; else echo "$BIN/$(basename "$1")"; fi; }
echo "== machine"; nproc; lscpu 2>/dev/null | grep -E "Model name|Socket|NUMA node\(s\)"
$RUN "$(find_bin tools/loom)" info 2>&1 | head -8
$RUN "$(find_bin benchmarks/node_overhead)" 2>&1 | tail -2
for T in $threads; do
  echo "== T=$T"
  for W in 1 "$T"; do
    [ "$T" = 1 ] && [ "$W" != 1 ] && continue
    LOOM_NUM_WORKERS=$W timeout 120 $RUN "$(find_bin benchmarks/cnn_bench)" --threads "$T" --bench train --blocks 3 --iters 5 2>&1 | tail -1 | sed "s/^/W=$W /"
    LOOM_NUM_WORKERS=$W timeout 120 $RUN "$(find_bin benchmarks/cnn_bench)" --threads "$T" --bench infer --blocks 3 --iters 2 2>&1 | tail -1 | sed "s/^/W=$W /"
  done
  for B in 1 8 32; do timeout 120 $RUN "$(find_bin benchmarks/inception_bench)" --threads "$T" --batch $B --reps 5 2>&1 | tail -3; done
  LOOM_NUM_THREADS=$T timeout 120 $RUN "$(find_bin benchmarks/dag_parallel)" --reps 10 2>&1 | tail -4
done
if python3 -c "import torch" 2>/dev/null; then
  echo "== pytorch"
  python3 -c "import torch; print(torch.__version__)"
  for T in $threads; do timeout 120 python3 benchmarks/cnn_torch.py --threads "$T" --blocks 3 --iters 5 2>&1 | tail -2; done
fi
