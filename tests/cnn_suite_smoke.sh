#!/bin/sh
# tests/cnn_suite_smoke.sh - the CNN throughput suite's script still works
# (run by "make check"): benchmarks/cnn_suite.sh with QUICK=1 (SimpleCNN,
# batch 1 and 8, a tenth of a second per measurement; PyTorch beside it
# when it imports) must write its JSON lines, its Markdown table with a
# row per measurement, and, with gnuplot installed, its two plots. Speed is
# not checked here (benchmarks never are in tests). Skips (77) without
# Python 3.
set -eu
srcdir=${srcdir:-.}
python=${PYTHON:-/usr/bin/python3}
if ! [ -x "$python" ]; then
    echo "cnn_suite_smoke: no $python; skipped" >&2
    exit 77
fi
out=$(mktemp -d /tmp/loom_suite_XXXXXX)
trap 'rm -rf "$out"' EXIT INT TERM
QUICK=1 OUT=$out LOOM_BUILDDIR=${LOOM_BUILDDIR:-.} "$srcdir/benchmarks/cnn_suite.sh" >"$out/log" 2>&1 || {
    cat "$out/log" >&2
    echo "cnn_suite_smoke: the suite failed" >&2
    exit 1
}
fail() { echo "cnn_suite_smoke: $*" >&2; cat "$out/log" >&2; exit 1; }
# 2 backends x (2 inference batches + 1 training) x the thread counts.
nthreads=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
if [ "$nthreads" -gt 1 ]; then nt=2; else nt=1; fi
loom_lines=$(grep -c '"impl": "loom"' "$out/results.jsonl" || true)
[ "$loom_lines" -eq $((6 * nt)) ] || fail "expected $((6 * nt)) loom lines, got $loom_lines"
rows=$(grep -c '^| simplecnn |' "$out/table.md" || true)
[ "$rows" -eq $((3 * nt)) ] || fail "expected $((3 * nt)) table rows, got $rows"
if "$python" -c 'import torch' 2>/dev/null; then
    grep -q '"impl": "pytorch"' "$out/results.jsonl" || fail "PyTorch imports but did not run"
    grep -q 'loom-auto / pytorch' "$out/table.md" || fail "no ratio column"
fi
if command -v gnuplot >/dev/null 2>&1 && [ "$nt" -gt 1 ]; then
    for p in threads batch; do
        head -c 8 "$out/$p.png" | od -An -c | grep -q 'P   N   G' || fail "$p.png is not a PNG"
    done
fi
echo "cnn_suite_smoke: ok ($loom_lines loom lines, $rows rows)"
