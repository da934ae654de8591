#!/usr/bin/python3
"""The time of one training step of the seed MLP in PyTorch, to compare with
benchmarks/mlp_step.c: Linear(20, 64) -> ReLU -> Linear(64, 1) -> Sigmoid,
BCELoss, Adam (lr 0.001), full batch of 100.

One step: optimizer.zero_grad(); loss = criterion(model(X), y);
loss.backward(); optimizer.step(). After --warmup steps, --blocks blocks of
--steps steps are timed; the median block's time per step is reported (and
the best block's), as one JSON line:
    {"impl":"pytorch","threads":1,"us_per_step":130.2,"best_us_per_step":128.9}

torch.set_num_threads(T) is set explicitly (1.13's default differs between
machines). For PyTorch's best configuration, run it as
benchmarks/run_mlp_bench.sh does: OpenMP OpenBLAS via LD_LIBRARY_PATH,
OPENBLAS_NUM_THREADS=T and OPENBLAS_CORETYPE for the machine's ISA
(shared/notes/baseline.md).
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.optim as optim


class SimpleNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(20, 64)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(64, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return self.sigmoid(self.fc2(self.relu(self.fc1(x))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--blocks", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=50)
    a = ap.parse_args()
    if a.threads < 1 or a.steps < 1 or a.blocks < 1 or a.warmup < 0:
        ap.error("--threads, --steps and --blocks must be >= 1, --warmup >= 0")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    X = torch.rand(100, 20)
    y = torch.randint(0, 2, (100, 1)).float()
    model = SimpleNN()
    criterion = nn.BCELoss()
    optimizer = optim.Adam(model.parameters(), lr=0.001)

    def step():
        optimizer.zero_grad()
        loss = criterion(model(X), y)
        loss.backward()
        optimizer.step()

    for _ in range(a.warmup):
        step()
    per_step = []
    for _ in range(a.blocks):
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step()
        per_step.append((time.perf_counter() - t0) / a.steps * 1e6)
    per_step.sort()
    print(json.dumps({"impl": "pytorch", "threads": a.threads, "us_per_step": round(per_step[len(per_step) // 2], 2),
                      "best_us_per_step": round(per_step[0], 2)}, separators=(",", ":")))


if __name__ == "__main__":
    main()
