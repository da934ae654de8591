#!/usr/bin/python3
"""ResNet throughput in PyTorch, to compare with benchmarks/resnet_bench.c
(torchvision's model, random inputs [N, 3, S, S]):

  infer: forward in eval mode under torch.no_grad(); --mode eager (NCHW),
         channels_last, or script (TorchScript freeze +
         optimize_for_inference, PyTorch's best inference mode on CPU);
  train: one Adam step (zero_grad, forward, cross entropy, backward, step,
         loss.item()); --mode eager or channels_last.

One JSON line, as resnet_bench. Run it with the thread count set and the
OpenMP OpenBLAS (benchmarks/torch_env.sh), as run_cnn_bench.sh does.
"""
import argparse
import json
import time

import torch
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--bench", default="infer", choices=["infer", "train"])
    ap.add_argument("--mode", default="eager", choices=["eager", "channels_last", "script"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    m = getattr(torchvision.models, a.model)()
    x = torch.randn(a.batch, 3, a.size, a.size)
    y = torch.randint(0, 1000, (a.batch,))
    if a.mode == "channels_last":
        m = m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if a.bench == "infer":
        m.eval()
        if a.mode == "script":
            with torch.no_grad():
                m = torch.jit.optimize_for_inference(torch.jit.script(m))

        def step():
            with torch.no_grad():
                m(x)
    else:
        opt = torch.optim.Adam(m.parameters())

        def step():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            loss.item()
    for _ in range(a.warmup):
        step()
    t = []
    for _ in range(a.blocks):
        t0 = time.perf_counter()
        for _ in range(a.iters):
            step()
        t.append((time.perf_counter() - t0) / a.iters)
    t.sort()
    med = t[len(t) // 2]
    print(json.dumps({"impl": "pytorch", "mode": a.mode, "bench": a.bench, "model": a.model, "batch": a.batch,
                      "size": a.size, "threads": a.threads, "ms": round(med * 1e3, 2),
                      "best_ms": round(t[0] * 1e3, 2), "images_per_s": round(a.batch / med, 2)},
                     separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
