"""PGD-10 throughput: robustart's PGD against torchattacks' PGD, same model, batch and seed.

    python benchmarks/attack_throughput.py [--data DIR] [--n 64] [--batch-size 32] [--device cpu|cuda]
                                          [--model efficientnet_lite0] [--out benchmarks/results]

Variants (each run on the same images, after one warm-up batch):
  torchattacks          torchattacks.PGD, the reference
  ours-exact            our PGD with torchattacks' semantics (every sample, every step, last
                        iterate); its adversarial images must equal torchattacks' bit for bit
  ours                  what `robustart eval --noise pgd` runs: clean-correct samples only, a sample
                        stops once fooled (its fooling image is kept)
  ours-bf16 / -fp16     ours with autocast (adversarial accuracy must stay within one image)
  ours-channels_last    ours with the model and batch in channels_last

Variants take turns in each of --repeats rounds and the median time counts (a shared machine's
slow spells then hit every variant alike). Prints images/s, the ratio to torchattacks, adversarial accuracy (the same-result check), and
the FLOP rate reached (from torch's FLOP counter: one forward+backward per step), with the share
of the device's bf16 dense peak on a known GPU. Writes a markdown table with the device and
versions to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

# bf16 dense peak (TFLOP/s) of GPUs we measure on, from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H100 80GB HBM3": 989.0, "H100": 989.0, "H200": 989.0, "A100": 312.0}


def load_images(data: str, n: int, model):
    from robustart.data.decode import load_rgb
    from robustart.data.sources import open_source

    samples = open_source(data).take(n)
    x = torch.stack([model.transform(load_rgb(s.path)[0]) for s in samples]).float() / 255
    return x, torch.tensor([s.label for s in samples])


def flops_per_step(model, x, y) -> float:
    """FLOPs of one PGD step on batch x: a forward and a backward to the input."""
    from torch.utils.flop_counter import FlopCounterMode

    xr = x.detach().clone().requires_grad_(True)
    with FlopCounterMode(display=False) as fc:
        loss = torch.nn.functional.cross_entropy(model(xr), y)
        loss.backward()  # (autograd.grad is not supported under the FLOP counter)
    return float(fc.get_total_flops())


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("ROBUSTART_IMAGENET_SAMPLE"))
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eps", type=float, default=0.25 / 255,
                    help="Linf budget (default 0.25/255: small enough that some images survive, so the same-result check means something)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--variants", default="torchattacks,ours-exact,ours,ours-bf16,ours-channels_last")
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed rounds; variants take turns in each round and the median time is reported")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    if not args.data:
        ap.error("--data (or ROBUSTART_IMAGENET_SAMPLE) must name a folder of ImageNet images")

    import torchattacks

    import robustart
    from robustart.engine.env import versions
    from robustart.noises import attacks as A

    dev = torch.device(args.device)
    model = robustart.load_model(args.model, device=dev, progress=False)
    for p in model.parameters():
        p.requires_grad_(False)
    x_all, y_all = load_images(args.data, args.n, model)
    alpha = 2.5 * args.eps / args.steps
    B = args.batch_size
    batches = [(x_all[i:i + B].to(dev), y_all[i:i + B].to(dev)) for i in range(0, len(x_all), B)]

    def run_torchattacks(x, y):
        return torchattacks.PGD(model, eps=args.eps, alpha=alpha, steps=args.steps, random_start=True)(x, y)

    def run_ours(x, y, exact=False, amp="none", channels_last=False):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if exact:
            return A.pgd(model, x, y, eps=args.eps, alpha=alpha, steps=args.steps, keep_best=False, early_stop=False).x
        with torch.no_grad():  # what the engine does: the clean pass picks the samples to attack
            target = model(x).argmax(1) == y
        out = x.clone()
        idx = target.nonzero().flatten()
        if idx.numel():
            out[idx] = A.pgd(model, x[idx], y[idx], eps=args.eps, alpha=alpha, steps=args.steps, amp=amp).x
        return out

    variants = {
        "torchattacks": run_torchattacks,
        "ours-exact": lambda x, y: run_ours(x, y, exact=True),
        "ours": run_ours,
        "ours-bf16": lambda x, y: run_ours(x, y, amp="bf16"),
        "ours-fp16": lambda x, y: run_ours(x, y, amp="fp16"),
        "ours-channels_last": lambda x, y: run_ours(x, y, channels_last=True),
    }
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    step_flops = sum(flops_per_step(model, x, y) for x, y in batches)
    with torch.no_grad():
        clean_acc = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches) / len(x_all)

    def timed(name):
        fn = variants[name]
        if name == "ours-channels_last":
            model.to(memory_format=torch.channels_last)
        try:
            torch.manual_seed(0)
            sync(dev)
            t0 = time.perf_counter()
            outs = [fn(x, y) for x, y in batches]
            sync(dev)
            return time.perf_counter() - t0, outs
        finally:
            if name == "ours-channels_last":
                model.to(memory_format=torch.contiguous_format)

    for name in chosen:  # warm-up (kernel selection, allocator)
        torch.manual_seed(0)
        if name == "ours-channels_last":
            model.to(memory_format=torch.channels_last)
        variants[name](*batches[0])
        model.to(memory_format=torch.contiguous_format)
    # Variants take turns within each round, so a slow spell of a shared machine hits them alike.
    times: dict = {name: [] for name in chosen}
    outputs: dict = {}
    for _ in range(args.repeats):
        for name in chosen:
            dt, outs = timed(name)
            times[name].append(dt)
            outputs[name] = outs
    rows, advs = [], {}
    for name in chosen:
        dt = sorted(times[name])[len(times[name]) // 2]
        outs = outputs[name]
        adv = torch.cat([o.float().contiguous() for o in outs])
        advs[name] = adv
        with torch.no_grad():
            correct = torch.cat([model(o.contiguous()).argmax(1) == y for o, (_, y) in zip(outs, batches)])
        rows.append({"variant": name, "seconds": dt, "seconds_all": times[name], "images_per_s": len(x_all) / dt,
                     "adv_acc": float(correct.float().mean()), "tflops": step_flops * args.steps / dt / 1e12})
        print(f"{name:20s} {len(x_all) / dt:9.2f} img/s  adv acc {rows[-1]['adv_acc']:.4f}  "
              f"times {[round(t, 2) for t in times[name]]}", file=sys.stderr)

    ref = next((r for r in rows if r["variant"] == "torchattacks"), None)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if gpu and k in gpu), None)
    for r in rows:
        r["ratio"] = r["images_per_s"] / ref["images_per_s"] if ref else float("nan")
        r["same_result"] = (abs(r["adv_acc"] - ref["adv_acc"]) * len(x_all) <= (0 if r["variant"] == "ours-exact" else 1)) if ref else None
        r["peak_share"] = r["tflops"] / peak if peak else None
    if ref and "ours-exact" in advs:
        rows_exact = next(r for r in rows if r["variant"] == "ours-exact")
        rows_exact["bitwise_equal_to_torchattacks"] = bool(torch.equal(advs["ours-exact"], advs["torchattacks"]))

    from robustart.engine.env import cpu_model

    cpu = cpu_model()
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": gpu or f"CPU: {cpu}, {torch.get_num_threads()} threads",
        "model": args.model, "images": len(x_all), "batch_size": B, "eps": args.eps, "steps": args.steps,
        "alpha": alpha, "clean_acc": clean_acc, "versions": {**versions(), "torchattacks": torchattacks.__version__},
        "flops_per_image_step": step_flops / len(x_all), "peak_bf16_tflops": peak,
    }
    lines = [
        f"# PGD-{args.steps} throughput: robustart vs torchattacks",
        "",
        f"- date: {info['date']}",
        f"- device: {info['device']}",
        f"- model: {args.model}; {len(x_all)} ImageNet sample images, batch {B}; Linf eps {args.eps:.6g}, "
        f"alpha {alpha:.6g}, {args.steps} steps; clean accuracy {clean_acc:.4f}; median of {args.repeats} "
        "interleaved rounds",
        f"- one step (forward + backward to the input): {step_flops / len(x_all) / 1e9:.2f} GFLOP per image",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"- command: `python benchmarks/attack_throughput.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        "TFLOP/s is effective: the FLOPs of full PGD (every image, every step) over the time taken, so",
        "variants that skip work (fooled or misclassified images) can exceed what the device computes.",
        "",
        "| variant | images/s | vs torchattacks | adv. accuracy | same result | eff. TFLOP/s | share of bf16 peak |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        share = f"{100 * r['peak_share']:.1f}%" if r["peak_share"] is not None else "n/a (no GPU)"
        same = {True: "yes", False: "NO", None: "n/a"}[r["same_result"]]
        if "bitwise_equal_to_torchattacks" in r:
            same += " (bit for bit)" if r["bitwise_equal_to_torchattacks"] else " (NOT bit for bit)"
        lines.append(f"| {r['variant']} | {r['images_per_s']:.2f} | {r['ratio']:.2f}x | {r['adv_acc']:.4f} | {same} | "
                     f"{r['tflops']:.3f} | {share} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "gpu" if gpu else "cpu"
    (out / f"attack_throughput_{tag}.md").write_text(text)
    (out / f"attack_throughput_{tag}.json").write_text(json.dumps({"info": info, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
