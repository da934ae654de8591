#!/bin/sh
# benchmarks/cnn_suite.sh - the CNN throughput suite: SimpleCNN, ResNet-18
# and ResNet-50; inference at batch 1, 8 and 32 and training at batch 32
# (ResNet-18 also trained at 32 x 32, batch 128); 1 thread and every core;
# Loom's backends auto (oneDNN where it applies) and ref (portable C).
# Every Loom measurement is `loom bench` (tools/bench.c).
#
# When PyTorch imports, each Loom measurement is followed at once by the
# same model, batch and threads in PyTorch (benchmarks/torch_bench.py), in
# its best configuration: thread count set explicitly, OpenMP OpenBLAS
# (benchmarks/torch_env.sh), and the fastest of its layouts (eager NCHW,
# channels_last, TorchScript for inference), so both see the same machine
# state. Install it with scripts/install-deps --with-torch.
#
# Writes to OUT (default benchmarks/results/cnn-suite-DATE):
#   results.jsonl  every JSON line, Loom's and PyTorch's
#   table.md       the Markdown table: images/s and Loom / PyTorch ratios
#   threads.png    images/s against threads, Loom beside PyTorch (gnuplot)
#   batch.png      inference images/s against batch size
# and prints the table. It takes about 20-30 minutes on a 2-core machine.
#
# Usage: benchmarks/cnn_suite.sh               (from the build directory)
# Environment: OUT, MODELS ("simplecnn resnet18 resnet50"), THREADS ("1 N"),
#   BACKENDS ("auto ref"), MIN_TIME (1 second per measurement), WARMUP (1),
#   QUICK=1 (simplecnn only, batch 1 and 8, a tenth of a second each: a
#   smoke test of the script), TORCH=0 (Loom only), LOOM_BUILDDIR (.),
#   PYTHON (/usr/bin/python3).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
builddir=${LOOM_BUILDDIR:-.}
loom=$builddir/tools/loom
python=${PYTHON:-/usr/bin/python3}
ncores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
models=${MODELS:-simplecnn resnet18 resnet50}
threads=${THREADS:-1 $ncores}
backends=${BACKENDS:-auto ref}
min_time=${MIN_TIME:-1}
warmup=${WARMUP:-1}
infer_batches=1,8,32
train_batch=32
if [ "${QUICK:-0}" = 1 ]; then
    models=simplecnn
    infer_batches=1,8
    train_batch=8
    min_time=0.1
    warmup=1
fi
# "1 1" on a 1-core machine: measure once.
threads=$(printf '%s\n' $threads | awk '!seen[$0]++' | tr '\n' ' ')
out=${OUT:-$here/results/cnn-suite-$(date +%Y-%m-%d)}

if [ ! -x "$loom" ]; then
    echo "cnn_suite: $loom not found: run 'make' first (or set LOOM_BUILDDIR)" >&2
    exit 1
fi
torch=${TORCH:-1}
if [ "$torch" = 1 ] && ! "$python" -c 'import torch' 2>/dev/null; then
    echo "cnn_suite: PyTorch not importable: Loom only (scripts/install-deps --with-torch)" >&2
    torch=0
fi
if [ "$torch" = 1 ]; then
    bench_name=cnn_suite
    . "$here/torch_env.sh"
fi
mkdir -p "$out"
results=$out/results.jsonl
: >"$results"

# One measurement: loom bench for every backend, then PyTorch.
measure() { # model mode batches size threads
    m=$1 mode=$2 batches=$3 size=$4 t=$5
    for b in $backends; do
        "$loom" bench --model "$m" --mode "$mode" --batch "$batches" --size "$size" --threads "$t" --backend "$b" \
            --warmup "$warmup" --min-time "$min_time" | tee -a "$results"
    done
    if [ "$torch" = 1 ]; then
        env -u OPENBLAS_CORETYPE LD_LIBRARY_PATH="$torch_ld" OPENBLAS_NUM_THREADS="$t" OMP_NUM_THREADS="$t" \
            ${coretype:+OPENBLAS_CORETYPE=$coretype} \
            "$python" "$here/torch_bench.py" --model "$m" --mode "$mode" --batch "$batches" --size "$size" \
            --threads "$t" --warmup "$warmup" --min-time "$min_time" | tee -a "$results"
    fi
}

for t in $threads; do
    for m in $models; do
        case $m in resnet*) size=224 ;; *) size=28 ;; esac
        measure "$m" infer "$infer_batches" "$size" "$t"
        measure "$m" train "$train_batch" "$size" "$t"
        if [ "$m" = resnet18 ] && [ "${QUICK:-0}" != 1 ]; then
            measure "$m" train 128 32 "$t"
        fi
    done
done

machine="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//'), $ncores cores"
"$python" "$here/suite_report.py" --machine "$machine" --out "$out" "$results"
echo "cnn_suite: wrote $out/" >&2
