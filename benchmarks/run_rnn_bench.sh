#!/bin/sh
# benchmarks/run_rnn_bench.sh - recurrent training speed, Loom
# (benchmarks/rnn_bench) against PyTorch (benchmarks/rnn_torch.py), run
# interleaved (loom, pytorch, loom, ...) with the same threads, PyTorch in
# its best configuration (benchmarks/torch_env.sh). Benchmarks: the seed's
# sine program with each cell (sine_rnn, sine_lstm, sine_gru: full batch of
# 990 windows of 10, hidden 50) and a 2-layer LSTM(256 -> 512), sequence 50,
# batch 64 (large_lstm).
#
# Usage: benchmarks/run_rnn_bench.sh            (from the build directory)
# Environment: ROUNDS (3), ITERS (10; 1 for large_lstm), BLOCKS (5; 3 for
#   large_lstm), THREADS (every core), BACKEND (auto), LOOM_BUILDDIR (.),
#   PYTHON (/usr/bin/python3).
# Prints every JSON line, then per benchmark the median over rounds of each
# implementation and the ratio loom/pytorch in steps/s (> 1: Loom is faster).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
builddir=${LOOM_BUILDDIR:-.}
loom_bin=$builddir/benchmarks/rnn_bench
torch_py=$here/rnn_torch.py
python=${PYTHON:-/usr/bin/python3}
rounds=${ROUNDS:-3}
iters=${ITERS:-10}
blocks=${BLOCKS:-5}
backend=${BACKEND:-auto}
ncores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
THREADS=${THREADS:-$ncores}

if [ ! -x "$loom_bin" ]; then
    echo "run_rnn_bench: $loom_bin not found: run 'make benchmarks/rnn_bench' (or set LOOM_BUILDDIR)" >&2
    exit 1
fi
bench_name=run_rnn_bench
. "$here/torch_env.sh"

torch() {
    env -u OPENBLAS_CORETYPE LD_LIBRARY_PATH="$torch_ld" OPENBLAS_NUM_THREADS="$t" OMP_NUM_THREADS="$t" \
        ${coretype:+OPENBLAS_CORETYPE=$coretype} "$python" "$torch_py" --threads "$t" "$@"
}

results=$(mktemp)
trap 'rm -f "$results"' EXIT INT TERM
r=1
while [ "$r" -le "$rounds" ]; do
    for t in $THREADS; do
        "$loom_bin" --threads "$t" --backend "$backend" --bench sine --iters "$iters" --blocks "$blocks" | tee -a "$results"
        torch --bench sine --iters "$iters" --blocks "$blocks" | tee -a "$results"
        "$loom_bin" --threads "$t" --backend "$backend" --bench large --iters 1 --blocks 3 --warmup 1 | tee -a "$results"
        torch --bench large --iters 1 --blocks 3 --warmup 1 | tee -a "$results"
    done
    r=$((r + 1))
done

"$python" - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for t in sorted({r["threads"] for r in rows}):
    for b in ("sine_rnn", "sine_lstm", "sine_gru", "large_lstm"):
        med = {}
        for impl in ("loom", "pytorch"):
            v = [r["steps_per_s"] for r in rows if r["impl"] == impl and r["threads"] == t and r["bench"] == b]
            med[impl] = statistics.median(v) if v else float("nan")
        print(json.dumps({"bench": b, "threads": t, "loom_steps_per_s": round(med["loom"], 2),
                          "pytorch_steps_per_s": round(med["pytorch"], 2),
                          "ratio_loom_over_pytorch": round(med["loom"] / med["pytorch"], 3)},
                         separators=(",", ":")))
PY
