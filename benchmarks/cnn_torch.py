#!/usr/bin/python3
"""Throughput of the seed SimpleCNN in PyTorch, to compare with
benchmarks/cnn_bench.c (same model, same batch sizes, random inputs):

  train: one Adam step on a batch of 64 (zero_grad, forward, NLL loss,
         backward, step, loss.item()), images/s;
  infer: forward of a batch of 1000 in eval mode under torch.no_grad().

After --warmup iterations, --blocks blocks of --iters iterations are timed;
the median block is reported (and the best), one JSON line each:
    {"impl":"pytorch","bench":"train","threads":2,"batch":64,"images_per_s":2310.0,...}

torch.set_num_threads(T) is set explicitly. Run it as
benchmarks/run_cnn_bench.sh does for PyTorch's best configuration (OpenMP
OpenBLAS, OPENBLAS_NUM_THREADS, OPENBLAS_CORETYPE: shared/notes/baseline.md).
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim


class SimpleCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return F.log_softmax(self.fc2(x), dim=1)


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


def emit(bench, threads, batch, med, best):
    print(json.dumps({"impl": "pytorch", "bench": bench, "threads": threads, "batch": batch,
                      "ms": round(med * 1e3, 4), "best_ms": round(best * 1e3, 4),
                      "images_per_s": round(batch / med, 1)}, separators=(",", ":")), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bench", default="all", choices=["all", "train", "infer"])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()
    if a.threads < 1 or a.iters < 1 or a.blocks < 1 or a.warmup < 0:
        ap.error("--threads, --iters and --blocks must be >= 1, --warmup >= 0")
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    model = SimpleCNN()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    if a.bench in ("all", "train"):
        x = torch.randn(64, 1, 28, 28)
        y = torch.randint(0, 10, (64,))

        def train_step():
            opt.zero_grad()
            loss = F.nll_loss(model(x), y)
            loss.backward()
            opt.step()
            loss.item()

        emit("train", a.threads, 64, *timed(train_step, a.iters, a.blocks, a.warmup))
    if a.bench in ("all", "infer"):
        model.eval()
        x = torch.randn(1000, 1, 28, 28)

        def infer_step():
            with torch.no_grad():
                model(x)

        emit("infer", a.threads, 1000, *timed(infer_step, max(1, a.iters // 10), a.blocks, a.warmup))


if __name__ == "__main__":
    main()
