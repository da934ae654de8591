#!/bin/sh
# benchmarks/run_cnn_bench.sh - the seed SimpleCNN's training (batch 64) and
# inference (batch 1000) throughput, Loom (benchmarks/cnn_bench) against
# PyTorch (benchmarks/cnn_torch.py), run interleaved (loom, pytorch, loom,
# ...) so that both see the same machine state, with the same threads.
#
# PyTorch runs in its best configuration (shared/notes/baseline.md): OpenMP
# OpenBLAS chosen per process (LD_LIBRARY_PATH=.../openblas-openmp),
# OPENBLAS_NUM_THREADS=T, torch.set_num_threads(T), OPENBLAS_CORETYPE for
# the CPU's best ISA (SkylakeX with AVX-512, Haswell with AVX2;
# LOOM_BENCH_CORETYPE overrides it). Install it with
# scripts/install-deps --with-torch.
#
# Usage: benchmarks/run_cnn_bench.sh            (from the build directory)
# Environment: ROUNDS (3), ITERS (20), BLOCKS (5), THREADS (every core),
#   BACKEND (auto), LOOM_BUILDDIR (.), PYTHON (/usr/bin/python3).
# Prints every JSON line, then per benchmark the median over rounds of each
# implementation and the ratio loom/pytorch in images/s (> 1: Loom is
# faster).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
builddir=${LOOM_BUILDDIR:-.}
loom_bin=$builddir/benchmarks/cnn_bench
torch_py=$here/cnn_torch.py
python=${PYTHON:-/usr/bin/python3}
rounds=${ROUNDS:-3}
iters=${ITERS:-20}
blocks=${BLOCKS:-5}
backend=${BACKEND:-auto}
ncores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
THREADS=${THREADS:-$ncores}

if [ ! -x "$loom_bin" ]; then
    echo "run_cnn_bench: $loom_bin not found: run 'make benchmarks/cnn_bench' (or set LOOM_BUILDDIR)" >&2
    exit 1
fi
bench_name=run_cnn_bench
. "$here/torch_env.sh"

results=$(mktemp)
trap 'rm -f "$results"' EXIT INT TERM
r=1
while [ "$r" -le "$rounds" ]; do
    for t in $THREADS; do
        "$loom_bin" --threads "$t" --backend "$backend" --bench train --iters "$iters" --blocks "$blocks" | tee -a "$results"
        "$loom_bin" --threads "$t" --backend "$backend" --bench infer --iters "$iters" --blocks "$blocks" | tee -a "$results"
        env -u OPENBLAS_CORETYPE LD_LIBRARY_PATH="$torch_ld" OPENBLAS_NUM_THREADS="$t" OMP_NUM_THREADS="$t" \
            ${coretype:+OPENBLAS_CORETYPE=$coretype} \
            "$python" "$torch_py" --threads "$t" --iters "$iters" --blocks "$blocks" | tee -a "$results"
    done
    r=$((r + 1))
done

"$python" - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for t in sorted({r["threads"] for r in rows}):
    for b in ("train", "infer"):
        med = {}
        for impl in ("loom", "pytorch"):
            v = [r["images_per_s"] for r in rows if r["impl"] == impl and r["threads"] == t and r["bench"] == b]
            med[impl] = statistics.median(v) if v else float("nan")
        print(json.dumps({"bench": b, "threads": t, "loom_images_per_s": round(med["loom"], 1),
                          "pytorch_images_per_s": round(med["pytorch"], 1),
                          "ratio_loom_over_pytorch": round(med["loom"] / med["pytorch"], 3)},
                         separators=(",", ":")))
PY
