# benchmarks/torch_env.sh - sourced by the run_*_bench.sh scripts: checks
# that PyTorch is importable and sets up its best configuration
# (shared/notes/baseline.md), for a script named $bench_name:
#   torch_ld  LD_LIBRARY_PATH choosing OpenMP OpenBLAS
#             (apt-get install libopenblas0-openmp; the reference BLAS is
#             5-20x slower, the pthread OpenBLAS oversubscribes);
#   coretype  OPENBLAS_CORETYPE for the CPU's best ISA: SkylakeX with
#             AVX-512, Haswell with AVX2 (LOOM_BENCH_CORETYPE overrides it;
#             the environment's own value is not trusted: baseline.md saw a
#             machine set Haswell on an AVX-512 CPU, costing PyTorch 20-37%).
# Expects $python (the interpreter with torch) and $ncores.
# Run PyTorch as:
#   env -u OPENBLAS_CORETYPE LD_LIBRARY_PATH="$torch_ld" OPENBLAS_NUM_THREADS=T \
#       OMP_NUM_THREADS=T ${coretype:+OPENBLAS_CORETYPE=$coretype} "$python" ...

"$python" -c 'import torch' 2>/dev/null || {
    echo "$bench_name: $python cannot import torch (scripts/install-deps --with-torch)" >&2
    exit 1
}
blasdir=/usr/lib/x86_64-linux-gnu/openblas-openmp
if [ -d "$blasdir" ]; then
    torch_ld=$blasdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
    echo "$bench_name: warning: $blasdir missing (apt-get install libopenblas0-openmp); PyTorch runs on the default BLAS" >&2
    torch_ld=${LD_LIBRARY_PATH:-}
fi
if [ -n "${LOOM_BENCH_CORETYPE:-}" ]; then
    coretype=$LOOM_BENCH_CORETYPE
elif grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
    coretype=SkylakeX
elif grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
    coretype=Haswell
else
    coretype= # let OpenBLAS detect it
fi
echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//'), $ncores cores" >&2
echo "# pytorch: LD_LIBRARY_PATH=$torch_ld OPENBLAS_CORETYPE=${coretype:-unset} OPENBLAS_NUM_THREADS=T" >&2
