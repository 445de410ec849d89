"""Binarized small CNN on Fashion-MNIST: full precision vs each binarization method.

    OMP_NUM_THREADS=1 python benchmarks/binary_fashion_mnist.py [--root /usr/share/datasets/fashion-mnist]
        [--fp-epochs 2] [--epochs 1] [--methods bnn,xnor,irnet,dirnet,reactnet] [--out benchmarks/results]

A full-precision CNN (first conv and classifier stay full precision in every binary variant;
two binary convs and one binary fully connected layer in between) is trained with cross-entropy,
then each binary student starts from its weights (`binarize_model`) and is trained by
distillation from it with `train_binary` (Adam, linear decay, KL to the teacher, EDE schedule).
Reports test accuracy on the 10k test images and training time. Fashion-MNIST comes from
Debian's `dataset-fashion-mnist` package (idx files).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustart.quant.binary import METHODS, binarize_model
from robustart.quant.train import train_binary


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(root: Path, split: str):
    prefix = "train" if split == "train" else "t10k"
    x = torch.from_numpy(read_idx(root / f"{prefix}-images-idx3-ubyte.gz").copy()).float().div(255).unsqueeze(1)
    y = torch.from_numpy(read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").copy()).long()
    return x, y


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # 14
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),  # 7
        nn.Conv2d(64, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(), nn.MaxPool2d(2),  # 3
        nn.Flatten(), nn.Linear(128 * 9, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(),
        nn.Linear(256, 10),
    )


@torch.no_grad()
def accuracy(net, x, y, bs=1000) -> float:
    net.eval()
    correct = sum(int((net(x[i:i + bs]).argmax(1) == y[i:i + bs]).sum()) for i in range(0, len(x), bs))
    return correct / len(x)


def train_fp(net, x, y, epochs, bs, lr, seed):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * (len(x) // bs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x) - bs + 1, bs):
            idx = perm[i:i + bs]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--fp-epochs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    a = ap.parse_args()
    if not (a.root / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"{a.root}: no Fashion-MNIST idx files (apt-get install dataset-fashion-mnist)")
    methods = [m for m in a.methods.split(",") if m]
    xtr, ytr = load(a.root, "train")
    xte, yte = load(a.root, "test")

    rows = []
    t0 = time.perf_counter()
    torch.manual_seed(a.seed)
    fp = train_fp(small_cnn(), xtr, ytr, a.fp_epochs, a.batch_size, a.lr, a.seed)
    rows.append(("full precision", "cross-entropy", a.fp_epochs, accuracy(fp, xte, yte), time.perf_counter() - t0))
    print(rows[-1], flush=True)

    for method in methods:
        torch.manual_seed(a.seed)
        student = binarize_model(copy.deepcopy(fp), method)
        g = torch.Generator().manual_seed(a.seed)
        batches = []
        for _ in range(a.epochs):  # fixed shuffles, so a run is reproducible
            perm = torch.randperm(len(xtr), generator=g)
            batches += [(xtr[perm[i:i + a.batch_size]], ytr[perm[i:i + a.batch_size]])
                        for i in range(0, len(xtr) - a.batch_size + 1, a.batch_size)]
        t0 = time.perf_counter()
        train_binary(student, fp, batches, steps=len(batches), lr=a.lr, seed=a.seed, progress=False)
        rows.append((method, "distillation from FP", a.epochs, accuracy(student, xte, yte), time.perf_counter() - t0))
        print(rows[-1], flush=True)

    from robustart.engine.env import cpu_model, versions

    v = versions()
    lines = [
        "# Binarized small CNN on Fashion-MNIST",
        "",
        f"Command: `OMP_NUM_THREADS={torch.get_num_threads()} python benchmarks/binary_fashion_mnist.py "
        f"--fp-epochs {a.fp_epochs} --epochs {a.epochs} --batch-size {a.batch_size} --lr {a.lr} --seed {a.seed}`",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Device: CPU ({cpu_model()}), "
        f"{torch.get_num_threads()} thread(s), shared with other work (times are indicative only).",
        f"Versions: torch {v.get('torch')}, timm {v.get('timm')}, python {sys.version.split()[0]}.",
        "",
        "Network: conv3x3(1->32) [FP] - conv3x3(32->64) - conv3x3(64->128) - fc(1152->256) - fc(256->10) [FP],",
        "each hidden layer followed by BatchNorm, activation and (convs) 2x2 max-pooling. The binary variants",
        "binarize the three middle layers (weights and inputs; activations become Hardtanh, or RPReLU for",
        "ReActNet), start from the full-precision weights and train by distillation from the full-precision",
        "network (Adam, lr decayed linearly to 0, KL to the teacher's softmax, T = 1).",
        "Train: 60,000 images; test: the 10,000 test images. One seed and a short schedule (CPU budget):",
        "differences of about a point between methods are not established by this run.",
        "",
        "| model | training | epochs | test accuracy | train time (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, how, ep, acc, sec in rows:
        lines.append(f"| {name} | {how} | {ep} | {100 * acc:.2f}% | {sec:.0f} |")
    a.out.mkdir(parents=True, exist_ok=True)
    out = a.out / "binary_fashion_mnist.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
