#!/usr/bin/python3
"""The report of benchmarks/cnn_suite.sh: reads its JSON lines (loom bench
and benchmarks/torch_bench.py), writes table.md (images/s side by side and
the Loom / PyTorch ratios) and, when gnuplot is installed, threads.png
(images/s against threads) and batch.png (inference images/s against batch
size), Loom beside PyTorch. Standard library only.

Usage: suite_report.py --out DIR [--machine TEXT] results.jsonl
"""
import argparse
import json
import os
import shutil
import subprocess
from collections import defaultdict


def key(r):
    return (r["model"], r["mode"], r["image"][1], r["batch"], r["threads"])


def series_name(r):
    return "pytorch" if r["impl"] == "pytorch" else "loom-" + r["backend"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--machine", default="")
    ap.add_argument("results")
    a = ap.parse_args()
    rows = [json.loads(line) for line in open(a.results) if line.strip().startswith("{")]
    # The median when a combination was measured more than once.
    cells = defaultdict(list)
    extra = {}
    for r in rows:
        cells[(key(r), series_name(r))].append(r["images_per_s"])
        extra[(key(r), series_name(r))] = r
    value = {k: sorted(v)[len(v) // 2] for k, v in cells.items()}
    series = sorted({s for _, s in value}, key=lambda s: (s == "pytorch", s))
    keys = sorted({k for k, _ in value}, key=lambda k: (k[0], k[1] != "infer", k[2], k[3], k[4]))
    loom_series = [s for s in series if s != "pytorch"]
    have_torch = "pytorch" in series

    head = ["model", "mode", "image", "batch", "threads"] + [s + " img/s" for s in series]
    if have_torch:
        head += [s + " / pytorch" for s in loom_series] + ["pytorch config"]
    head += ["loom-auto GFLOP/s", "loom-auto peak MB"] if "loom-auto" in series else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in keys:
        model, mode, size, batch, threads = k
        cols = [model, mode, "%dx%d" % (size, size), str(batch), str(threads)]
        cols += ["%.1f" % value[(k, s)] if (k, s) in value else "-" for s in series]
        if have_torch:
            pt = value.get((k, "pytorch"))
            cols += ["**%.2f**" % (value[(k, s)] / pt) if pt and (k, s) in value else "-" for s in loom_series]
            cols.append(extra[(k, "pytorch")].get("config", "") if pt else "-")
        if "loom-auto" in series:
            r = extra.get((k, "loom-auto"))
            cols += ["%.0f" % r["gflops"], "%.0f" % (r["peak_bytes"] / 2**20)] if r else ["-", "-"]
        lines.append("| " + " | ".join(cols) + " |")
    note = "Images/s (median step); ratios > 1: Loom is faster."
    if a.machine:
        note = "Machine: %s. %s" % (a.machine, note)
    table = "\n".join(lines) + "\n\n" + note + "\n"
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(table)
    print(table)
    if shutil.which("gnuplot"):
        plot(a.out, value, keys, series, a.machine)
    else:
        print("suite_report: gnuplot not installed (apt-get install gnuplot-nox): no plots")


def plot(out, value, keys, series, machine):
    """threads.png: one panel per (model, mode, size, batch) measured at
    several thread counts; batch.png: one panel per model's inference at
    the most threads, against batch size. Lines: each series."""
    colors = {"loom-auto": "#1f77b4", "loom-onednn": "#17becf", "loom-ref": "#2ca02c", "pytorch": "#d62728"}
    panels = []  # (title, xlabel, [(series, [(x, y)])])
    groups = defaultdict(set)
    for k in keys:
        groups[k[:4]].add(k[4])
    for g, ts in sorted(groups.items()):
        if len(ts) < 2:
            continue
        lines = [(s, [(t, value[(g + (t,), s)]) for t in sorted(ts) if (g + (t,), s) in value]) for s in series]
        panels.append(("%s %s %dx%d, batch %d" % (g[0], g[1], g[2], g[2], g[3]), "threads", lines))
    draw(os.path.join(out, "threads.png"), panels, colors, machine, "images/s against threads")
    panels = []
    maxt = max(k[4] for k in keys)
    for model in sorted({k[0] for k in keys}):
        ks = [k for k in keys if k[0] == model and k[1] == "infer" and k[4] == maxt]
        if len({k[3] for k in ks}) < 2:
            continue
        lines = [(s, [(k[3], value[(k, s)]) for k in sorted(ks, key=lambda k: k[3]) if (k, s) in value])
                 for s in series]
        panels.append(("%s inference, %d threads" % (model, maxt), "batch size", lines))
    draw(os.path.join(out, "batch.png"), panels, colors, machine, "inference images/s against batch size")


def draw(path, panels, colors, machine, title):
    if not panels:
        return
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    data = path[:-4] + ".dat"
    script = ["set terminal pngcairo size %d,%d font 'sans,9'" % (420 * cols, 320 * rows + 40),
              "set output '%s'" % path,
              "set multiplot layout %d,%d title '%s%s'" % (rows, cols, title, (" (" + machine + ")") if machine else ""),
              "set key top left", "set grid", "set ylabel 'images/s'", "set yrange [0:*]", "set logscale x 2"]
    block = 0
    with open(data, "w") as f:
        for ptitle, xlabel, lines in panels:
            plots = []
            for s, pts in lines:
                if not pts:
                    continue
                f.write("# %s %s\n" % (ptitle, s))
                for x, y in pts:
                    f.write("%g %g\n" % (x, y))
                f.write("\n\n")
                plots.append("'%s' index %d using 1:2 with linespoints lw 2 pt 7 lc rgb '%s' title '%s'"
                             % (data, block, colors.get(s, "#000000"), s))
                block += 1
            script += ["set title '%s'" % ptitle, "set xlabel '%s'" % xlabel, "plot " + ", ".join(plots)]
    script.append("unset multiplot")
    subprocess.run(["gnuplot"], input="\n".join(script) + "\n", text=True, check=True)


if __name__ == "__main__":
    main()
