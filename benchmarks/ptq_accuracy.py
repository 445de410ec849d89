"""PTQ accuracy of efficientnet_lite0 on the 1000-image ImageNet sample: fp vs W8A8, W6A6, W4A8,
W4A4 with min-max, percentile and MSE calibration, and BRECQ/AdaRound reconstruction for the
4-bit-weight forms. Every number comes from a job in the results store (the engine), so a rerun
reuses finished jobs.

  OMP_NUM_THREADS=2 ROBUSTART_IMAGENET_SAMPLE=... python benchmarks/ptq_accuracy.py \
      [--store DIR] [--limit N] [--out benchmarks/results/ptq_accuracy.md]

Calibration: 64 images drawn (seed 0) from the evaluated sample itself (the default when no
calibration set is named), so the table gives top-1 over all images and over the images not used
for calibration.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

FORMS = ["w8a8", "w6a6", "w4a8", "w4a4"]
OBSERVERS = ["minmax", "percentile", "mse"]
RECON = ["w4a8:observer=mse,recon=on,iters=100", "w4a4:observer=mse,recon=on,iters=100"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=str(Path.home() / ".robustart" / "bench-ptq"))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ptq_accuracy.md"))
    ap.add_argument("--batch-size", type=int, default=50)
    args = ap.parse_args()

    import robustart
    from robustart.engine.env import cpu_model, versions
    from robustart.engine.evaluate import evaluate
    from robustart.results import metrics as M

    data = os.environ.get("ROBUSTART_IMAGENET_SAMPLE")
    if not data:
        sys.exit("set ROBUSTART_IMAGENET_SAMPLE to the 1000-image ImageNet sample folder")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    # most telling first: each row is written as soon as it is done
    specs = [("fp", "efficientnet_lite0")]
    specs += [(f"{f} minmax", f"efficientnet_lite0@{f}") for f in FORMS]
    specs += [(f"{r.split(':')[0]} mse + reconstruction", f"efficientnet_lite0@{r}") for r in RECON]
    specs += [(f"{f} {o}", f"efficientnet_lite0@{f}:observer={o}") for o in OBSERVERS[1:] for f in FORMS]
    rows = []
    for label, spec in specs:
        t0 = time.perf_counter()
        res = evaluate(spec, data, limit=args.limit, batch_size=args.batch_size, store=args.store, progress=False)
        dt = time.perf_counter() - t0
        rec = res.records
        calib = res.meta.get("calibration")
        top1 = M.top1(rec)
        if calib:
            from robustart.quant.forms import calibration_set
            from robustart.zoo.registry import get_entry
            from robustart.data.sources import open_source

            ids = {s.id for s in calibration_set(get_entry(spec).quant, open_source(data)).samples}
            held = M.top1(rec[~rec["sample_id"].isin(ids)])
        else:
            held = float("nan")
        rows.append((label, spec, top1, held, len(rec), res.reused, dt, calib))
        print(f"{label:32s} top1 {top1:6.2f}  held-out {held:6.2f}  ({'reused' if res.reused else f'{dt:.0f}s'})",
              flush=True)
        _write(rows, args, robustart, cpu_model, versions)  # after every row: partial results survive

    print(f"wrote {args.out}")


def _write(rows, args, robustart, cpu_model, versions) -> None:
    fp = rows[0][2]
    lines = [
        "# PTQ accuracy: efficientnet_lite0 on the 1000-image ImageNet sample",
        "",
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- device: {cpu_model()}, {torch.get_num_threads()} threads (CPU)",
        f"- versions: robustart {robustart.__version__}, " + ", ".join(f"{k} {v}" for k, v in versions().items()
                                                                   if k in ("torch", "timm", "python")),
        f"- command: `OMP_NUM_THREADS={torch.get_num_threads()} python benchmarks/ptq_accuracy.py"
        + (f" --limit {args.limit}" if args.limit else "") + "`",
        "- weights per output channel, symmetric; activations per tensor, asymmetric (zero point);",
        "  first conv and classifier at 8 bits; attention n/a (CNN); backend fake (simulation)",
        "- calibration: 64 images drawn with seed 0 from the evaluated sample (the default);",
        "  'held-out' is top-1 over the other images. Reconstruction: 100 AdaRound iterations per",
        "  block, batches of 8 calibration images, MSE-calibrated scales.",
        "",
        "| form | observer / method | model spec | top-1 % | held-out top-1 % | Δ vs fp (points) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for label, spec, top1, held, n, reused, dt, calib in rows:
        form, _, how = label.partition(" ")
        lines.append(f"| {form} | {how or '-'} | `{spec}` | {top1:.1f} | "
                     f"{'-' if held != held else f'{held:.1f}'} | {'-' if form == 'fp' else f'{top1 - fp:+.1f}'} |")
    lines += ["", f"n = {rows[0][4]} images; fp top-1 {fp:.1f}%."]
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
