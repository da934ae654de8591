#!/usr/bin/python3
"""PyTorch's side of `loom bench` (tools/bench.c): the same models, steps,
timing and JSON keys, so benchmarks/cnn_suite.sh can put the two side by
side.

Models: mlp (PyTorch's quickstart network), simplecnn (the seed's), and
torchvision's resnet18/34/50, built as loom_model builds them. A step is
what loom bench times: infer = forward in eval mode under no_grad; train =
zero_grad, forward, cross-entropy on random labels, backward, SGD step
(lr 0.01, momentum 0.9), loss.item(). After --warmup steps, steps are
timed one by one until --min-time seconds and at least 3 steps; the median
step gives images/s.

PyTorch's best configuration: its thread count set explicitly
(torch.set_num_threads), OpenMP OpenBLAS (run through
benchmarks/torch_env.sh), and --layout best, which measures every layout
that applies (eager NCHW, channels_last, and for inference TorchScript
freeze + optimize_for_inference) and reports the fastest, naming it in
"config". One JSON line per batch size.
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    def __init__(self, c, h, w, classes):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(nn.Linear(c * h * w, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                                               nn.Linear(512, classes))

    def forward(self, x):
        return self.linear_relu_stack(self.flatten(x))


class SimpleCNN(nn.Module):
    def __init__(self, c, h, w, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(c, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.fc1 = nn.Linear(64 * ((h - 4) // 2) * ((w - 4) // 2), 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return F.log_softmax(self.fc2(x), dim=1)


def build(name, c, size, classes):
    if name == "mlp":
        return MLP(c, size, size, classes)
    if name == "simplecnn":
        return SimpleCNN(c, size, size, classes)
    import torchvision
    m = getattr(torchvision.models, name)(num_classes=classes)
    if c != 3:
        m.conv1 = nn.Conv2d(c, 64, 7, 2, 3, bias=False)
    return m


def measure(a, batch, layout):
    """Median and best seconds per step, and the steps timed."""
    torch.manual_seed(1)
    m = build(a.model, a.channels, a.size, a.classes)
    x = torch.randn(batch, a.channels, a.size, a.size)
    y = torch.randint(0, a.classes, (batch,))
    if layout == "channels_last":
        m = m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if a.mode == "infer":
        m.eval()
        if layout == "script":
            with torch.no_grad():
                m = torch.jit.optimize_for_inference(torch.jit.script(m))

        def step():
            with torch.no_grad():
                m(x)
    else:
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

        def step():
            opt.zero_grad()
            loss = F.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            loss.item()
    for _ in range(a.warmup):
        step()
    t = []
    start = time.perf_counter()
    while len(t) < 3 or time.perf_counter() - start < a.min_time:
        t0 = time.perf_counter()
        step()
        t.append(time.perf_counter() - t0)
    t.sort()
    return t[len(t) // 2], t[0], len(t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=["mlp", "simplecnn", "resnet18", "resnet34", "resnet50"])
    ap.add_argument("--mode", default="infer", choices=["infer", "train"])
    ap.add_argument("--batch", default="32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=0)
    ap.add_argument("--channels", type=int, default=0)
    ap.add_argument("--classes", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--layout", default="best", choices=["best", "eager", "channels_last", "script"])
    a = ap.parse_args()
    resnet = a.model.startswith("resnet")
    a.size = a.size or (224 if resnet else 28)
    a.channels = a.channels or (3 if resnet else 1)
    a.classes = a.classes or (1000 if resnet else 10)
    torch.set_num_threads(a.threads)
    if a.layout != "best":
        layouts = [a.layout]
    else:
        layouts = ["eager"] + (["channels_last"] if a.model != "mlp" else [])
        layouts += ["script"] if a.mode == "infer" else []
    for batch in [int(b) for b in a.batch.split(",")]:
        results = {lay: measure(a, batch, lay) for lay in layouts}
        best = min(results, key=lambda lay: results[lay][0])
        med, fastest, n = results[best]
        print(json.dumps({"impl": "pytorch", "model": a.model, "mode": a.mode, "batch": batch, "threads": a.threads,
                          "config": best, "image": [a.channels, a.size, a.size],
                          "images_per_s": round(batch / med, 2), "ms": round(med * 1e3, 3),
                          "best_ms": round(fastest * 1e3, 3), "iters": n,
                          "tried": {lay: round(batch / r[0], 2) for lay, r in results.items()}}), flush=True)


if __name__ == "__main__":
    main()
