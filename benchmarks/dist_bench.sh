#!/bin/sh
# benchmarks/dist_bench.sh - data parallelism on one machine: training
# images/s of SimpleCNN and ResNet-18 (Fashion-MNIST, 28 x 28, global batch
# 64) with 1 rank x T threads against T ranks x 1 thread (loom train
# --distributed under mpirun), and how much of the gradient communication
# the backward hides: from rank 0's trace, the share of the host_call
# (all-reduce) time during which another node of the same rank computed.
#
# Usage: benchmarks/dist_bench.sh            (from the build directory)
# Environment: T (every core), LIMIT (batches per run, 100), MODELS
#   ("simplecnn resnet18"), DATA (/usr/share/datasets/fashion-mnist),
#   LOOM_BUILDDIR (.).
set -eu
builddir=${LOOM_BUILDDIR:-.}
loom=$builddir/tools/loom
data=${DATA:-/usr/share/datasets/fashion-mnist}
t=${T:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)}
limit=${LIMIT:-100}
models=${MODELS:-simplecnn resnet18}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
mpi="mpirun --allow-run-as-root --oversubscribe --mca btl self,vader,tcp --mca btl_tcp_if_include lo --mca btl_vader_single_copy_mechanism none"
for m in $models; do
    "$loom" train --model "$m" --data "$data" --limit "$limit" --batch-size 64 --threads "$t" --json \
        | sed "s/^{/{\"config\": \"1 rank x $t threads\", /"
    $mpi -np "$t" sh -c "LOOM_TRACE=$tmp/$m.\$OMPI_COMM_WORLD_RANK.json exec $loom train --model $m --data $data \
        --limit $limit --batch-size 64 --threads 1 --json" | sed "s/^{/{\"config\": \"$t ranks x 1 thread\", /"
    python3 - "$tmp/$m.0.json" "$m" <<'PY'
import json, sys
ev = [e for e in json.load(open(sys.argv[1]))["traceEvents"] if e.get("ph") == "X" and e.get("cat") != "scheduler"]
comm = [(e["ts"], e["ts"] + e["dur"], e["tid"]) for e in ev if e["name"] == "host_call"]
other = [(e["ts"], e["ts"] + e["dur"], e["tid"]) for e in ev if e["name"] != "host_call"]
total = sum(b - a for a, b, _ in comm)
hidden = 0.0
for a, b, tid in comm:
    spans = sorted((max(a, x), min(b, y)) for x, y, t in other if t != tid and x < b and y > a)
    end = a
    for x, y in spans:
        x = max(x, end)
        if y > x:
            hidden += y - x
            end = y
print(json.dumps({"model": sys.argv[2], "rank0_comm_ms": round(total / 1e3, 1),
                  "hidden_share": round(hidden / total, 3) if total else None}))
PY
done
