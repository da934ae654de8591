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
#   - a rank that is killed ends the job instead of hanging it;
#   - loom train: 2 epochs on 2 ranks give the figures of 1 epoch on 3
#     ranks resumed from its checkpoint for epoch 2 in one process (the
#     global batches do not depend on the ranks; 1e-4 for the rounding).
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
mpi() { # np command...
    np=$1
    shift
    timeout 120 "$mpirun" --allow-run-as-root --oversubscribe -np "$np" \
        --mca btl self,vader,tcp --mca btl_tcp_if_include lo --mca btl_vader_single_copy_mechanism none \
        env LOOM_NUM_THREADS=1 OMP_NUM_THREADS=1 ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
        "$@" 2>&1
}
run() { # np args...: tests/dist_check
    np=$1
    shift
    mpi "$np" "$prog" "$@"
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
# Resuming with another number of ranks (loom train, a small generated
# MNIST-format set: 240 training and 60 test images of 12 x 12).
loom=$builddir/tools/loom
data=$(mktemp -d /tmp/loom_dist_XXXXXX)
trap 'rm -rf "$data"' EXIT INT TERM
python=${PYTHON:-python3}
if command -v "$python" >/dev/null 2>&1 && [ -x "$loom" ]; then
    "$python" - "$data" <<'PY'
import struct, sys
d = sys.argv[1]
for split, n in (("train", 240), ("t10k", 60)):
    s = 7 + n
    px, lb = bytearray(), bytearray()
    for i in range(n):
        c = (i * 7) % 10
        lb.append(c)
        for k in range(144):
            s = (s * 1664525 + 1013904223) % 2**32
            px.append(200 + (s >> 29) if k % 12 == c + 1 else s >> 26)
    open(f"{d}/{split}-images-idx3-ubyte", "wb").write(struct.pack(">iiii", 0x803, n, 12, 12) + px)
    open(f"{d}/{split}-labels-idx1-ubyte", "wb").write(struct.pack(">ii", 0x801, n) + lb)
PY
    args="--model mlp --data $data --batch-size 24 --optimizer sgd --lr 0.01 --json --threads 1"
    a=$(mpi 2 "$loom" train $args --epochs 2 --checkpoint "$data/a.ckpt" | grep '"epoch": 2,')
    mpi 3 "$loom" train $args --epochs 1 --checkpoint "$data/b.ckpt" >/dev/null
    b=$(ASAN_OPTIONS="${ASAN_OPTIONS:-}" "$loom" train $args --epochs 2 --checkpoint "$data/b.ckpt" --resume 2>&1 |
        grep '"epoch": 2,')
    echo "[resume] 2 ranks: $a"
    echo "[resume] 3 ranks, then 1: $b"
    if ! "$python" -c '
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
bad = [k for k in ("train_loss", "test_loss") if abs(a[k] - b[k]) > 1e-4]
sys.exit(1 if bad or a.get("ranks") != 2 else 0)' "$a" "$b" 2>/dev/null; then
        echo "dist: FAIL: resuming on another number of ranks changed the figures" >&2
        fail=1
    fi
fi
[ $fail -eq 0 ] && echo "dist: ok"
exit $fail
