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
    ap.add_argument("--rows", type=int, default=None, help="only the first N rows of the table (in run order)")
    ap.add_argument("--speed", action="store_true",
                    help="instead: time one forward pass of fp, w8a8 fake and w8a8 cpu-int8 (batch 32)")
    args = ap.parse_args()
    if args.speed:
        return speed(args)

    import robustart
    from robustart.engine.env import cpu_model, versions
    from robustart.engine.evaluate import evaluate
    from robustart.results import metrics as M

    data = os.environ.get("ROBUSTART_IMAGENET_SAMPLE")
    if not data:
        sys.exit("set ROBUSTART_IMAGENET_SAMPLE to the 1000-image ImageNet sample folder")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    # most telling first (each row is written as soon as it is done): W8A8 by every observer,
    # then the 4-bit forms with and without reconstruction, then the rest
    def name_of(f, o):
        return f"efficientnet_lite0@{f}" + ("" if o == "minmax" else f":observer={o}")

    specs = [("fp", "efficientnet_lite0")] + [(f"w8a8 {o}", name_of("w8a8", o)) for o in OBSERVERS]
    specs += [("w6a6 minmax", name_of("w6a6", "minmax"))]
    for f in ("w4a4", "w4a8"):
        specs += [(f"{f} minmax", name_of(f, "minmax"))]
        specs += [(f"{r.split(':')[0]} mse + reconstruction", f"efficientnet_lite0@{r}") for r in RECON
                  if r.startswith(f)]
    specs += [(f"{f} {o}", name_of(f, o)) for f in ("w6a6", "w4a4", "w4a8") for o in OBSERVERS[1:]]
    rows = []
    for label, spec in specs[: args.rows]:
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
    left = specs[len(rows):]
    if left:  # say which rows this pass did not run
        p = Path(args.out)
        text = p.read_text()
        note = ("\nNot run in this pass (time budget on a shared 2-core CPU; `--rows` limits the table): "
                + ", ".join(f"{label} (`{spec}`)" for label, spec in left) + ".\n")
        cut = text.find("\n## Forward time")
        p.write_text(text + note if cut < 0 else text[:cut] + note + text[cut:])

    print(f"wrote {args.out}")


def _write(rows, args, robustart, cpu_model, versions) -> None:
    fp = rows[0][2]
    lines = [
        "# PTQ accuracy: efficientnet_lite0 on the 1000-image ImageNet sample",
        "",
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- device: {cpu_model()}, {torch.get_num_threads()} thread(s) (CPU), shared with other work",
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
    p = Path(args.out)
    old = p.read_text() if p.is_file() else ""
    keep = old[old.index("\n## Forward time"):] if "\n## Forward time" in old else ""  # from --speed
    p.write_text("\n".join(lines) + "\n" + keep)


def speed(args) -> None:
    """Median wall time of a batch-32 forward pass: fp, W8A8 fake quant, W8A8 cpu-int8."""
    import copy
    import statistics

    from robustart.data.sources import open_source
    from robustart.engine.env import cpu_model
    from robustart.quant import backends as B
    from robustart.quant.forms import calibration_set, quantize_zoo_model
    from robustart.zoo.build import load_model
    from robustart.zoo.registry import get_entry

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    src = open_source(os.environ["ROBUSTART_IMAGENET_SAMPLE"])
    e = get_entry("efficientnet_lite0@w8a8")
    fp = load_model("efficientnet_lite0", progress=False)
    q = copy.deepcopy(fp)
    q.entry = e
    cal = calibration_set(e.quant, src)
    quantize_zoo_model(q, e.quant, cal)
    qi = B.set_backend(copy.deepcopy(q), "cpu-int8")
    x = torch.rand(32, 3, 224, 224)
    out = []
    for name, m in (("fp32", fp), ("w8a8 fake", q), ("w8a8 cpu-int8", qi)):
        ts = []
        with torch.inference_mode():
            m(x[:4])
            for _ in range(3):
                t0 = time.perf_counter()
                m(x)
                ts.append(time.perf_counter() - t0)
        out.append((name, statistics.median(ts)))
        print(name, f"{statistics.median(ts):.2f}s", flush=True)
    lines = ["", "## Forward time, batch 32 at 224x224 (median of 3)", "",
             f"- {cpu_model()}, {torch.get_num_threads()} thread(s), shared with other work (numbers are rough);",
             f"  `OMP_NUM_THREADS={torch.get_num_threads()} python benchmarks/ptq_accuracy.py --speed`",
             "- cpu-int8 quantizes each layer's input and requantizes its output around"
             " `torch.ops.quantized` conv2d/linear (x86 engine); BatchNorm and activations run in float"
             " between them, so this is not a fused int8 deployment.", "",
             "| model | s / batch | img/s |", "|---|---:|---:|"]
    lines += [f"| {n} | {t:.2f} | {32 / t:.1f} |" for n, t in out]
    p = Path(args.out)
    text = p.read_text() if p.is_file() else ""
    text = text.split("\n## Forward time")[0].rstrip("\n") + "\n"
    p.write_text(text + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
