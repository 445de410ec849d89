"""Throughput of the corruptions, images/s: the imagecorruptions reference (one image at a time,
CPU) vs ours batched on the CPU vs ours batched on CUDA (when a GPU is present).

  python benchmarks/corruption_throughput.py --data ../shared/data/imagenet-sample \
      --severity 3 --images 32 --ref-images 16 --batch 32 --repeats 2 --threads 1

Images are real ImageNet images at efficientnet_lite0's input geometry (224x224 uint8). Each
timing is the best of `--repeats` passes after one warm-up pass (which also compiles numba and
fills caches); the reference's and ours' passes alternate, so that a change in the machine's
load hits both. "overall" is the time per image summed over all corruptions. The load average
is recorded before and after. Also measured: how many output values the float64 corruptions
(brightness, saturate, contrast's table) would change in float32. Writes
benchmarks/results/corruption_throughput_<device>.{md,csv}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corruption_common import environment, header, load_images  # noqa: E402

from robustart.noises.corruption import CorruptionNoise  # noqa: E402
from robustart.noises.corruptions import constants as K  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def timed(fns: dict, repeats: int, sync=None) -> dict:
    """Best seconds per pass of each function; one warm-up each, then the passes alternate."""
    for fn in fns.values():
        fn()
        if sync:
            sync()
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            if sync:
                sync()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def float32_changes(x) -> list[dict]:
    """Share of output values (and levels of 255) that change if brightness, saturate and
    contrast ran in float32 instead of float64 (the reference's precision), on these images."""
    from robustart.noises.corruptions import ops
    from robustart.noises.corruptions import torch_impl as T

    def f32(name, sev):
        xf = x.float() / 255
        if name == "contrast":
            c = K.CONTRAST[sev - 1]
            m = xf.mean((2, 3), keepdim=True)
            y = ((xf - m) * c + m).clamp(0, 1) * 255
        else:
            h, s, v = ops.rgb_to_hsv(xf)
            if name == "brightness":
                v = (v + K.BRIGHTNESS[sev - 1]).clamp(0, 1)
            else:
                a, b = K.SATURATE[sev - 1]
                s = (s * a + b).clamp(0, 1)
            y = ops.hsv_to_rgb(h, s, v).clamp(0, 1) * 255
        return y.to(torch.uint8)

    rows = []
    for name in ("brightness", "saturate", "contrast"):
        for sev in K.SEVERITIES:
            d = (f32(name, sev).int() - T.corrupt(x, name, sev).int()).abs()
            rows.append({"corruption": name, "severity": sev, "share_changed_pct": 100 * float((d > 0).double().mean()),
                         "max_levels": int(d.max())})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/imagenet-sample")
    ap.add_argument("--severity", type=int, default=3)
    ap.add_argument("--images", type=int, default=64, help="images per timed pass (ours)")
    ap.add_argument("--ref-images", type=int, default=16, help="images per timed pass (reference)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--corruptions", default="all")
    ap.add_argument("--no-cpu", action="store_true", help="skip ours on the CPU (e.g. on a GPU machine in a hurry)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import pandas as pd

    import robustart

    transform = robustart.load_model("efficientnet_lite0").transform
    x, ids, _ = load_images(args.data, max(args.images, args.ref_images), transform)
    cuda = torch.cuda.is_available()
    names = K.ALL if args.corruptions == "all" else tuple(args.corruptions.split(","))
    import os

    load_before = os.getloadavg()
    rows = []
    for name in names:
        def run(impl, xs, idl):
            noise = CorruptionNoise({"name": "corruption", "corruption": name, "severity": args.severity,
                                     "impl": impl, "jpeg": False})
            for i in range(0, len(idl), args.batch):
                noise.corrupt_uint8(xs[i:i + args.batch], idl[i:i + args.batch], 0)

        row = {"corruption": name, "severity": args.severity}
        xr, ir = x[: args.ref_images], ids[: args.ref_images]
        xo, io = x[: args.images], ids[: args.images]
        fns = {"reference_img_s": (args.ref_images, lambda: run("reference", xr, ir))}
        if not args.no_cpu:
            fns["ours_cpu_img_s"] = (args.images, lambda: run("torch", xo, io))
        if cuda:
            xg = xo.cuda()
            fns["ours_cuda_img_s"] = (args.images, lambda: run("torch", xg, io))
        secs = timed({k: f for k, (_, f) in fns.items()}, args.repeats, torch.cuda.synchronize if cuda else None)
        row.update({k: n / secs[k] for k, (n, _) in fns.items()})
        rows.append(row)
        print({k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    load_after = os.getloadavg()
    df = pd.DataFrame(rows)
    total = {c: float((1 / df[c]).sum()) for c in df.columns if c.endswith("_img_s")}  # s per image, all corruptions
    dev = "cuda" if cuda else "cpu"
    env = environment(dev)
    out = Path(args.out) if args.out else OUT / f"corruption_throughput_{dev}"
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out.with_suffix(".csv"), index=False)
    cols = [c for c in ("reference_img_s", "ours_cpu_img_s", "ours_cuda_img_s") if c in df]
    env["load average (1, 5, 15 min) before"] = ", ".join(f"{v:.2f}" for v in load_before)
    env["load average (1, 5, 15 min) after"] = ", ".join(f"{v:.2f}" for v in load_after)
    env["command"] = "python benchmarks/corruption_throughput.py " + " ".join(sys.argv[1:])
    md = ["# Corruption throughput (images/s, higher is better)", "", header(env), "",
          f"Severity {args.severity}; 224x224 uint8 real ImageNet images; ours in batches of {args.batch} "
          f"({args.images} images per pass), reference one image at a time ({args.ref_images} per pass); best of "
          f"{args.repeats} passes after a warm-up.", ""]
    heads = {"reference_img_s": "reference (CPU)", "ours_cpu_img_s": "ours (CPU)", "ours_cuda_img_s": "ours (CUDA)"}
    ratio_cols = [c for c in cols if c != "reference_img_s"]
    md.append("| corruption | " + " | ".join(heads[c] for c in cols) + " | " + " | ".join(f"{heads[c]} / ref" for c in ratio_cols) + " |")
    md.append("|---" * (1 + len(cols) + len(ratio_cols)) + "|")
    for r in rows:
        md.append(f"| {r['corruption']} | " + " | ".join(f"{r[c]:.1f}" for c in cols) + " | "
                  + " | ".join(f"{r[c] / r['reference_img_s']:.2f}x" for c in ratio_cols) + " |")
    md.append("| **overall** | " + " | ".join(f"{len(rows) / total[c]:.1f}" for c in cols) + " | "
              + " | ".join(f"{total['reference_img_s'] / total[c]:.2f}x" for c in ratio_cols) + " |")
    md += ["", "overall = number of corruptions / (sum over corruptions of seconds per image): the rate of "
           "applying every corruption once to each image."]
    for c in ratio_cols:
        ratio = df[c] / df["reference_img_s"]
        worst = df.loc[ratio.idxmin(), "corruption"]
        md.append(f"{heads[c]}: slowest against the reference {worst} at {ratio.min():.2f}x; every corruption at "
                  f"least as fast as the reference: {'yes' if ratio.min() >= 1 else 'no'}; overall "
                  f"{total['reference_img_s'] / total[c]:.2f}x.")
    if not cuda:
        md += ["", "No CUDA device on this machine: the GPU column is pending (run this script on a GPU)."]
    cores = os.cpu_count() or 1
    if max(load_before[0], load_after[0]) > cores:
        md += ["", f"The machine was shared and busy (1-minute load average {load_before[0]:.1f} / {load_after[0]:.1f} "
               f"on {cores} logical cores), so the absolute rates are low; the ratios compare passes of the "
               "reference and ours that alternated, under the same load."]
    if names == K.ALL:
        f32 = pd.DataFrame(float32_changes(x[: args.images]))
        md += ["", "## float64 where the reference's truncation needs it", "",
               f"Output values that would change (by at most `max` levels) if these corruptions ran in float32 rather "
               f"than float64, on the {args.images} images above (the float64 versions give the reference's pixels "
               "bit for bit):", "",
               "| corruption | " + " | ".join(f"sev {s}" for s in K.SEVERITIES) + " | max |", "|---" * 7 + "|"]
        for name, grp in f32.groupby("corruption", sort=False):
            md.append(f"| {name} | " + " | ".join(f"{v:.3f}%" for v in grp["share_changed_pct"])
                      + f" | {int(grp['max_levels'].max())} |")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
