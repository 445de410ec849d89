"""Training speed of PGD-7 adversarial training for the CIFAR-10-sized ABanditNAS network
(`abanditnas-10`: 10 layers, C = 48, auxiliary head, 3x32x32), in images per second.

    python benchmarks/nas_train_throughput.py [--device cpu|cuda] [--batch-size 64] [--steps 5] [--warmup 2]

One step = PGD-7 (random start, step 2/255, eps 8/255) on the batch in training mode, then a
forward/backward/SGD update with the auxiliary loss: 8 forward and 8 backward passes. Random
images (speed does not depend on content). Writes benchmarks/results/nas_train_throughput_<device>.md.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from robustart.engine.env import cpu_model, versions
    from robustart.nas.train import adversarial_batch, loss_of
    from robustart.zoo.build import load_model

    dev = torch.device(args.device)
    model = load_model("abanditnas-10", pretrained=False, device=dev).train()
    params = sum(p.numel() for p in model.net.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.rand(args.batch_size, 3, 32, 32, device=dev, generator=g)
    y = torch.randint(0, 10, (args.batch_size,), device=dev, generator=g)

    def step():
        xa = adversarial_batch(model, x, y, "pgd", 8 / 255, 7, 2 / 255, g)
        loss, _ = loss_of(model, xa, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    times.sort()
    med = times[len(times) // 2]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_model()
    v = versions()
    out = Path(__file__).parent / "results" / f"nas_train_throughput_{dev.type}.md"
    text = (
        "# PGD-7 adversarial training speed, abanditnas-10 (CIFAR-10 size)\n\n"
        f"{datetime.now(timezone.utc).date()}, {name}, torch {v.get('torch')}, threads {torch.get_num_threads()}, "
        f"fp32, batch {args.batch_size}, {params:,} parameters; median of {args.steps} steps after "
        f"{args.warmup} warm-up steps.\n\n"
        "| device | batch | s / step (median) | images / s |\n|---|---:|---:|---:|\n"
        f"| {name} | {args.batch_size} | {med:.3f} | {args.batch_size / med:.1f} |\n\n"
        f"Command: `python benchmarks/nas_train_throughput.py --device {dev.type} --batch-size {args.batch_size} "
        f"--steps {args.steps} --warmup {args.warmup}" + (f" --threads {args.threads}" if args.threads else "") + "`\n"
    )
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
