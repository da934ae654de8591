#!/bin/bash
# benchmarks/device_bundle.sh - packs Loom's benchmark programs, built here,
# for a machine that has no Loom build: the many-core device machine some
# sessions are lent (docs/runtime.md section 9), which has PyTorch but none
# of Debian's libraries.
#
#   benchmarks/device_bundle.sh OUT.tar.xz
#
# Builds the committed tree (HEAD, from a clone) twice, statically
# (--disable-shared), for x86-64-v4 (AVX-512) and x86-64-v3 (AVX2): the
# development VM's -march=native may use instructions the other machine
# lacks. Packs both, with every shared library they load and the dynamic
# loader, into OUT (about 13 MB, under the device's 64 MiB carry limit).
# There:
#
#   mkdir -p /tmp/d && tar -xJf OUT.tar.xz -C /tmp/d
#   V=v3; grep -qw avx512f /proc/cpuinfo && V=v4
#   R="/tmp/d/lib/ld-linux-x86-64.so.2 --library-path /tmp/d/lib"
#   $R /tmp/d/$V/loom info
#   BIN=/tmp/d/$V RUN="$R" benchmarks/scaling.sh 16 8 4 2 1
#
# (benchmarks/scaling.sh finds the programs in BIN by their base names.)
set -euo pipefail
out=${1:?usage: benchmarks/device_bundle.sh OUT.tar.xz}
case $out in /*) ;; *) out=$PWD/$out ;; esac
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$top" "$work/src"
(cd "$work/src" && autoreconf -fi >/dev/null 2>&1)
progs="tools/loom benchmarks/cnn_bench benchmarks/dag_parallel benchmarks/inception_bench"
mkdir -p "$work/pack/lib"
for v in v4 v3; do
  mkdir -p "$work/b$v" "$work/pack/$v"
  (cd "$work/b$v" && "$work/src/configure" --disable-shared --disable-native \
     CFLAGS="-O3 -march=x86-64-$v -mtune=generic" >configure.log &&
   make -j"$(nproc)" $progs >make.log)
  for p in $progs; do cp "$work/b$v/$p" "$work/pack/$v/"; done
done
for f in "$work"/pack/v4/*; do ldd "$f"; done | awk '/=>/ {print $3} /ld-linux/ {print $1}' | sort -u |
  while read -r lib; do cp -L "$lib" "$work/pack/lib/"; done
tar -cJf "$out" -C "$work/pack" .
echo "device_bundle: $out ($(du -h "$out" | cut -f1))"
