#!/bin/sh
# tests/dist.sh - data parallelism over MPI (run by "make check" when Loom
# was built with MPI; skipped, 77, otherwise): tests/dist_check under
# mpirun on loopback, one thread per rank:
#   - 2 and 3 ranks train (and 2 ranks of 2 threads, the reductions beside
#     the compute): parameters bitwise identical on every rank, and
#     equal to single-process training on the same global batch (1e-5);
#   - models that differ between ranks are refused, naming the rank;
#   - a rank that stops answering makes the others fail within the 3 s
#     timeout with a clear message, and the job ends;
#   - a rank that is killed ends the job instead of hanging it.
set -u
builddir=${LOOM_BUILDDIR:-.}
prog=$builddir/tests/dist_check
if [ ! -x "$prog" ]; then
    echo "dist: $prog not built (configure found no MPI: apt-get install libopenmpi-dev openmpi-bin); skipped" >&2
    exit 77
fi
mpirun=${MPIRUN:-mpirun}
command -v "$mpirun" >/dev/null 2>&1 || { echo "dist: no mpirun; skipped" >&2; exit 77; }
# Open MPI refuses root without --allow-run-as-root; --oversubscribe allows
# 3 ranks on 2 cores; shared memory (without the single-copy mechanism,
# which containers often forbid) and loopback only. Under ASan, Open MPI's
# own allocations still live at exit: leak checking is off for its ranks.
run() { # np args...
    np=$1
    shift
    timeout 120 "$mpirun" --allow-run-as-root --oversubscribe -np "$np" \
        --mca btl self,vader,tcp --mca btl_tcp_if_include lo --mca btl_vader_single_copy_mechanism none \
        env LOOM_NUM_THREADS=1 OMP_NUM_THREADS=1 ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
        "$prog" "$@" 2>&1
}
fail=0
for case in "2 train" "3 train" "2 train2"; do
    set -- $case
    out=$(run "$1" "$2")
    rc=$?
    echo "$out" | sed "s/^/[np $1 $2] /"
    if [ $rc -ne 0 ] || ! echo "$out" | grep -q "dist_check: ok ($1 ranks"; then
        echo "dist: FAIL: $2 on $1 ranks (status $rc)" >&2
        fail=1
    fi
done
out=$(run 2 mismatch)
rc=$?
echo "$out" | sed 's/^/[mismatch] /'
if [ $rc -ne 0 ] || ! echo "$out" | grep -q "dist_check: ok"; then
    echo "dist: FAIL: a model mismatch was not reported (status $rc)" >&2
    fail=1
fi
start=$(date +%s)
out=$(run 2 hang)
rc=$?
took=$(( $(date +%s) - start ))
echo "$out" | sed 's/^/[hang] /'
if [ $rc -eq 0 ] || [ "$took" -ge 40 ] || ! echo "$out" | grep -q "did not complete within 3 s"; then
    echo "dist: FAIL: a stuck rank: status $rc after ${took}s, no timeout message" >&2
    fail=1
fi
start=$(date +%s)
out=$(run 2 die)
rc=$?
took=$(( $(date +%s) - start ))
echo "$out" | sed 's/^/[die] /'
if [ $rc -eq 0 ] || [ "$took" -ge 60 ]; then
    echo "dist: FAIL: a killed rank: status $rc after ${took}s" >&2
    fail=1
fi
[ $fail -eq 0 ] && echo "dist: ok"
exit $fail
