#!/bin/sh
# tests/resnet_parity.sh - torchvision's ResNet-18 against Loom's, end to end
# through `loom predict` (run by "make check").
#
# PyTorch builds torchvision.models.resnet18() with seeded random weights
# and non-trivial BatchNorm statistics (running means and variances,
# affine parameters away from 1 and 0), saves it with
# torch.save(model.state_dict()) - a 45 MB file, hence generated here and
# not committed - and computes its evaluation-mode outputs for a batch of
# an odd size (2 x 3 x 64 x 80). `loom predict` loads the .pth (strictly:
# every name, shape and dtype must match) and must give the same outputs
# (numpy.allclose, rtol 1e-4, atol 1e-5, or 2e-6 of the largest output
# where that is more: ResNet-50's outputs reach ~34, and its float sums in
# another order - oneDNN's blocked 1x1 kernels against PyTorch's - differ by
# up to ~2e-5 there, 5e-7 of that scale). The same with ResNet-50 on a
# smaller batch covers Bottleneck blocks. Skipped (exit 77) where PyTorch
# or torchvision is missing (scripts/install-deps --with-torch installs
# them).
set -eu
python=${PYTHON:-/usr/bin/python3}
loom=${LOOM_BUILDDIR:-.}/tools/loom
if ! "$python" -c 'import torch, torchvision, numpy' 2>/dev/null; then
    echo "resnet_parity: SKIP: $python cannot import torch, torchvision and numpy"
    exit 77
fi
[ -x "$loom" ] || { echo "resnet_parity: $loom not built"; exit 1; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/loom-resnet-XXXXXX")
trap 'rm -rf "$dir"' EXIT INT TERM

"$python" - "$dir" <<'PY'
import sys, numpy as np, torch, torchvision
d = sys.argv[1]
torch.manual_seed(20261127)
for name, shape in (("resnet18", (2, 3, 64, 80)), ("resnet50", (1, 3, 48, 40))):
    m = getattr(torchvision.models, name)()
    with torch.no_grad():
        for n, b in m.named_buffers():
            if n.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.1)
            elif n.endswith("running_var"):
                b.copy_(torch.rand_like(b) * 0.5 + 0.75)
            elif n.endswith("num_batches_tracked"):
                b.fill_(7)
        for n, p in m.named_parameters():
            if ".bn" in n or n.startswith("bn") or "downsample.1" in n:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if n.endswith("weight") else 0.0))
    m.eval()
    torch.save(m.state_dict(), f"{d}/{name}.pth")
    x = torch.randn(*shape)
    with torch.no_grad():
        y = m(x)
    np.save(f"{d}/{name}_x.npy", x.numpy())
    np.save(f"{d}/{name}_y.npy", y.numpy())
PY

for name in resnet18 resnet50; do
    "$loom" predict --model "$name" --weights "$dir/$name.pth" --input "$dir/${name}_x.npy" --output "$dir/${name}_out.npy"
    "$python" - "$dir" "$name" <<'PY'
import sys, numpy as np
d, name = sys.argv[1:]
got, want = np.load(f"{d}/{name}_out.npy"), np.load(f"{d}/{name}_y.npy")
assert got.shape == want.shape, (got.shape, want.shape)
err = float(np.abs(got - want).max())
print(f"resnet_parity: {name}: max |loom - pytorch| = {err:.3g} over {got.size} outputs")
atol = max(1e-5, 2e-6 * float(np.abs(want).max()))
assert np.allclose(got, want, rtol=1e-4, atol=atol), f"{name}: outputs differ (max {err}, atol {atol:.3g})"
PY
done

# A damaged file gives one line and status 1, and writes nothing.
head -c 100000 "$dir/resnet18.pth" > "$dir/cut.pth"
if "$loom" predict --model resnet18 --weights "$dir/cut.pth" --input "$dir/resnet18_x.npy" \
        --output "$dir/none.npy" 2> "$dir/err.txt"; then
    echo "resnet_parity: a truncated .pth was accepted"; exit 1
fi
cat "$dir/err.txt"
[ ! -e "$dir/none.npy" ] || { echo "resnet_parity: output written after a failure"; exit 1; }
echo "resnet_parity: ok"
