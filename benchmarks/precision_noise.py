"""Precision noise: how often a model's prediction changes when the same images run at another
numeric precision or backend setting (fp16 / bf16 autocast, TF32, channels_last, cuDNN
benchmark, the CPU), through `robustart.evaluate_suite(..., noise="precision")`: every variant
this device can run, against the strict fp32 pass.

    python benchmarks/precision_noise.py --data DIR [--images 100] [--device cuda] [--batch-size 50]

Writes precision_noise_<cpu|gpu>.{md,json} to --out: per variant top-1, flip rate (share of
images whose top-1 class differs from fp32's) and the largest logit difference.
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
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)

    import robustart
    from robustart.engine.env import cpu_model, versions

    store = Path(tempfile.mkdtemp(prefix="precision-noise-"))
    t = time.perf_counter()
    suite = robustart.evaluate_suite(args.model, args.data, noise="precision", limit=args.images,
                                     batch_size=args.batch_size, device=args.device, store=store, progress=False,
                                     workers=0)
    seconds = time.perf_counter() - t
    m = suite.metrics
    clean = suite.jobs[0].metrics.get("clean_top1")
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": gpu or f"CPU: {cpu_model()}, {torch.get_num_threads()} threads",
        "model": args.model, "images": suite.jobs[0].metrics.get("n", args.images), "clean_top1": clean,
        "seconds": seconds, "versions": versions(),
        "top1": m["precision_top1"], "flip_rate": m["precision_flip_rate"],
        "max_logit_diff": m["precision_max_logit_diff"],
    }
    lines = [
        "# Precision noise: prediction flips against strict fp32", "",
        f"- date: {info['date']}", f"- device: {info['device']}",
        f"- {args.model} on {args.images} ImageNet sample images (fp32 top-1 {clean:.1f}%), batch "
        f"{args.batch_size}; {len(suite.jobs)} variants in {seconds:.0f} s",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"- command: `python benchmarks/precision_noise.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "", "| variant | top-1 (%) | flip rate (%) | max logit diff |", "|---|---:|---:|---:|",
    ]
    for k in info["top1"]:
        lines.append(f"| {k} | {info['top1'][k]:.1f} | {info['flip_rate'][k]:.2f} | {info['max_logit_diff'][k]:.3g} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "gpu" if gpu else "cpu"
    (out / f"precision_noise_{tag}.md").write_text(text)
    (out / f"precision_noise_{tag}.json").write_text(json.dumps(info, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
