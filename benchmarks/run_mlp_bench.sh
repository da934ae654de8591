#!/bin/sh
# benchmarks/run_mlp_bench.sh - one training step of the seed MLP, Loom
# (benchmarks/mlp_step) against PyTorch (benchmarks/mlp_step_torch.py), run
# interleaved (loom, pytorch, loom, pytorch, ...) so that both see the same
# machine state, for 1 thread and for every core, over several rounds.
#
# PyTorch runs in its best configuration (shared/notes/baseline.md):
#   - OpenMP OpenBLAS chosen per process:
#       LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp
#     (apt-get install libopenblas0-openmp; the reference BLAS is 5-20x slower)
#   - OPENBLAS_NUM_THREADS=T and torch.set_num_threads(T);
#   - OPENBLAS_CORETYPE for the CPU's best ISA: SkylakeX with AVX-512,
#     Haswell with AVX2 (detected from /proc/cpuinfo; LOOM_BENCH_CORETYPE=...
#     overrides it).
#
# Usage: benchmarks/run_mlp_bench.sh            (from the build directory)
# Environment: ROUNDS (3), STEPS (500), BLOCKS (7), THREADS ("1 <nproc>"),
#   LOOM_BUILDDIR (.), PYTHON (/usr/bin/python3: the Debian PyTorch).
# Prints every JSON line, then per thread count the median over rounds of
# each implementation and the ratio loom/pytorch (< 1: Loom is faster).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
builddir=${LOOM_BUILDDIR:-.}
loom_bin=$builddir/benchmarks/mlp_step
torch_py=$here/mlp_step_torch.py
python=${PYTHON:-/usr/bin/python3}
rounds=${ROUNDS:-3}
steps=${STEPS:-500}
blocks=${BLOCKS:-7}
ncores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
if [ -z "${THREADS:-}" ]; then
    THREADS=1
    [ "$ncores" -gt 1 ] && THREADS="1 $ncores"
fi

if [ ! -x "$loom_bin" ]; then
    echo "run_mlp_bench: $loom_bin not found: run 'make benchmarks/mlp_step' (or set LOOM_BUILDDIR)" >&2
    exit 1
fi
bench_name=run_mlp_bench
. "$here/torch_env.sh"

results=$(mktemp)
trap 'rm -f "$results"' EXIT INT TERM
r=1
while [ "$r" -le "$rounds" ]; do
    for t in $THREADS; do
        "$loom_bin" --threads "$t" --steps "$steps" --blocks "$blocks" | tee -a "$results"
        env -u OPENBLAS_CORETYPE LD_LIBRARY_PATH="$torch_ld" OPENBLAS_NUM_THREADS="$t" OMP_NUM_THREADS="$t" \
            ${coretype:+OPENBLAS_CORETYPE=$coretype} \
            "$python" "$torch_py" --threads "$t" --steps "$steps" --blocks "$blocks" | tee -a "$results"
    done
    r=$((r + 1))
done

# Medians over rounds, and the ratio.
"$python" - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for t in sorted({r["threads"] for r in rows}):
    med = {}
    for impl in ("loom", "pytorch"):
        v = [r["us_per_step"] for r in rows if r["impl"] == impl and r["threads"] == t]
        med[impl] = statistics.median(v) if v else float("nan")
    print(json.dumps({"threads": t, "loom_us_per_step": round(med["loom"], 2),
                      "pytorch_us_per_step": round(med["pytorch"], 2),
                      "ratio_loom_over_pytorch": round(med["loom"] / med["pytorch"], 3)}, separators=(",", ":")))
PY
