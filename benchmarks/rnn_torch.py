#!/usr/bin/python3
"""Training speed of recurrent networks in PyTorch, to compare with
benchmarks/rnn_bench.c (same models, same shapes, same data):

  sine:  the seed's program: RNN/LSTM/GRU(1 -> 50, batch_first) +
         Linear(50, 1) on the last step, 990 windows of 10 sine values,
         one full-batch Adam step (zero_grad, forward, MSE, backward, step,
         loss.item());
  large: LSTM(256 -> 512, 2 layers), sequence 50, batch 64 (time-major),
         MSE(output, random target), one Adam step.

After --warmup steps, --blocks blocks of --iters steps are timed; the
median block is reported (and the best), one JSON line each:
    {"impl":"pytorch","bench":"sine_rnn","threads":2,"steps_per_s":80.1,...}

torch.set_num_threads(T) is set explicitly; run it as
benchmarks/run_rnn_bench.sh does for PyTorch's best configuration.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def timed(step, iters, blocks, warmup):
    for _ in range(warmup):
        step()
    t = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        t.append((time.perf_counter() - t0) / iters)
    t.sort()
    return t[len(t) // 2], t[0]


def emit(bench, threads, med, best):
    print(json.dumps({"impl": "pytorch", "bench": bench, "threads": threads, "ms": round(med * 1e3, 4),
                      "best_ms": round(best * 1e3, 4), "steps_per_s": round(1 / med, 2)},
                     separators=(",", ":")), flush=True)


def bench_train(modules, forward, x, y, a, name):
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=0.01)

    def step():
        opt.zero_grad()
        loss = F.mse_loss(forward(x), y)
        loss.backward()
        opt.step()
        loss.item()

    emit(name, a.threads, *timed(step, a.iters, a.blocks, a.warmup))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bench", default="all", choices=["all", "sine", "large"])
    ap.add_argument("--cell", default="all", choices=["all", "rnn", "lstm", "gru"])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    if a.threads < 1 or a.iters < 1 or a.blocks < 1 or a.warmup < 0:
        ap.error("--threads, --iters and --blocks must be >= 1, --warmup >= 0")
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    if a.bench in ("all", "sine"):
        data = torch.tensor([math.sin(100.0 * i / 999) for i in range(1000)], dtype=torch.float32)
        x = torch.stack([data[i:i + 10] for i in range(990)]).unsqueeze(-1)  # [990, 10, 1]
        y = data[10:].unsqueeze(-1)  # [990, 1]
        for name, cls in (("rnn", nn.RNN), ("lstm", nn.LSTM), ("gru", nn.GRU)):
            if a.cell not in ("all", name):
                continue
            rnn, fc = cls(1, 50, batch_first=True), nn.Linear(50, 1)
            bench_train([rnn, fc], lambda x: fc(rnn(x)[0][:, -1, :]), x, y, a, f"sine_{name}")
    if a.bench in ("all", "large"):
        lstm = nn.LSTM(256, 512, num_layers=2)
        x, y = torch.randn(50, 64, 256), torch.randn(50, 64, 512)
        bench_train([lstm], lambda x: lstm(x)[0], x, y, a, "large_lstm")


if __name__ == "__main__":
    main()
