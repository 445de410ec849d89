"""Clean evaluation, images/s with decoding: `robustart.evaluate` (the engine: decoding workers,
the model's eval transform, batched forward passes, per-sample records written to a store)
against a plain loop (Pillow decode, the same transform, forward, in one process), both from
JPEG files to top-1, with the same model, images, batch size and device.

    python benchmarks/clean_eval_throughput.py --data DIR [--images 100] [--copies 4]
        [--batch-size 50] [--workers 4] [--device cuda] [--out benchmarks/results]

The --images JPEGs are linked --copies times under distinct names, so a pass is long enough for
start-up (model build, worker start) to matter little; both timings include it, as a user's run
does. Each is the best of --repeats passes after a warm-up, the two taking turns. Writes
clean_eval_throughput_<cpu|gpu>.{md,json} to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("ROBUSTART_IMAGENET_SAMPLE", "../shared/data/imagenet-sample"))
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--copies", type=int, default=4, help="times each image is evaluated per pass")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-warmup", action="store_true", help="skip the warm-up pass (smoke runs)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)

    import robustart
    from robustart.data.decode import load_rgb
    from robustart.data.sources import open_source
    from robustart.engine.env import cpu_model, versions

    dev = torch.device(args.device)
    files = sorted(Path(args.data).glob("n*_*.JPEG"))[: args.images]
    if not files:
        ap.error(f"--data {args.data}: no <wnid>_<name>.JPEG files")
    tmp = Path(tempfile.mkdtemp(prefix="clean-eval-"))
    flat = tmp / "images"
    flat.mkdir()
    for k in range(args.copies):
        for f in files:
            (flat / f"{f.stem}_copy{k}{f.suffix}").symlink_to(f.resolve())
    samples = open_source(str(flat)).take(None)
    n, bs = len(samples), args.batch_size

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def plain() -> float:
        model = robustart.load_model(args.model, device=dev, progress=False).eval()
        correct = 0
        with torch.inference_mode():
            for i in range(0, n, bs):
                chunk = samples[i:i + bs]
                x = torch.stack([model.transform(load_rgb(s.path)[0]) for s in chunk]).to(dev)
                pred = model(x.float() / 255).argmax(1).cpu()
                correct += int((pred == torch.tensor([s.label for s in chunk])).sum())
        sync()
        return correct / n

    def engine() -> float:
        res = robustart.evaluate(args.model, str(flat), limit=n, batch_size=bs, device=str(dev), workers=args.workers,
                                 store=tmp / "store", force=True, progress=False)
        sync()
        return res.metrics["top1"] / 100

    runs = {"robustart.evaluate": engine, "plain loop": plain}
    best = {k: float("inf") for k in runs}
    top1 = {}
    for k, fn in runs.items() if not args.no_warmup else ():  # warm-up: caches, cuDNN, worker imports
        top1[k] = fn()
    for _ in range(args.repeats):
        for k, fn in runs.items():
            t = time.perf_counter()
            top1[k] = fn()
            best[k] = min(best[k], time.perf_counter() - t)
    rate = {k: n / v for k, v in best.items()}
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": gpu or f"CPU: {cpu_model()}, {torch.get_num_threads()} threads",
        "model": args.model, "images": n, "distinct_images": len(files), "batch_size": bs, "workers": args.workers,
        "load_average": os.getloadavg(), "versions": versions(),
        "images_per_s": rate, "top1": top1, "engine_vs_plain": rate["robustart.evaluate"] / rate["plain loop"],
    }
    lines = [
        "# Clean evaluation throughput (JPEG files to top-1)", "",
        f"- date: {info['date']}", f"- device: {info['device']}",
        f"- {args.model}; {n} images ({len(files)} ImageNet sample JPEGs x {args.copies}), batch {bs}, "
        f"{args.workers} decoding workers for the engine; best of {args.repeats} passes after a warm-up, taking turns",
        "- load average: " + ", ".join(f"{v:.2f}" for v in info["load_average"]),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"- command: `python benchmarks/clean_eval_throughput.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "", "| loop | images/s | top-1 |", "|---|---:|---:|",
    ]
    lines += [f"| {k} | {rate[k]:.1f} | {100 * top1[k]:.1f}% |" for k in runs]
    lines += ["", f"robustart.evaluate / plain loop: {info['engine_vs_plain']:.2f}x (both include building the "
              "model; the engine also writes per-sample records)."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "gpu" if gpu else "cpu"
    (out / f"clean_eval_throughput_{tag}.md").write_text(text)
    (out / f"clean_eval_throughput_{tag}.json").write_text(json.dumps(info, indent=1, default=str) + "\n")
    return 0 if abs(top1["robustart.evaluate"] - top1["plain loop"]) < 1e-9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
