"""Throughput of the corruptions, images/s: the imagecorruptions reference (one image at a time,
CPU) vs ours batched on the CPU vs ours batched on CUDA (when a GPU is present).

  python benchmarks/corruption_throughput.py --data ../shared/data/imagenet-sample \
      --severity 3 --images 64 --batch 64

Images are real ImageNet images at efficientnet_lite0's input geometry (224x224 uint8). Each
timing is the best of `--repeats` passes after one warm-up pass (which also compiles numba and
fills caches). "overall" is the time per image summed over all corruptions. Writes
benchmarks/results/corruption_throughput[_<device>].{md,csv}.
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


def timed(fn, repeats: int, sync=None) -> float:
    fn()  # warm-up
    if sync:
        sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - t)
    return best


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
    rows = []
    for name in names:
        def run(impl, xs, idl):
            noise = CorruptionNoise({"name": "corruption", "corruption": name, "severity": args.severity,
                                     "impl": impl, "jpeg": False})
            for i in range(0, len(idl), args.batch):
                noise.corrupt_uint8(xs[i:i + args.batch], idl[i:i + args.batch], 0)

        row = {"corruption": name, "severity": args.severity}
        xr, ir = x[: args.ref_images], ids[: args.ref_images]
        row["reference_img_s"] = args.ref_images / timed(lambda: run("reference", xr, ir), args.repeats)
        xo, io = x[: args.images], ids[: args.images]
        if not args.no_cpu:
            row["ours_cpu_img_s"] = args.images / timed(lambda: run("torch", xo, io), args.repeats)
        if cuda:
            xg = xo.cuda()
            row["ours_cuda_img_s"] = args.images / timed(lambda: run("torch", xg, io), args.repeats, torch.cuda.synchronize)
        rows.append(row)
        print({k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    df = pd.DataFrame(rows)
    total = {c: float((1 / df[c]).sum()) for c in df.columns if c.endswith("_img_s")}  # s per image, all corruptions
    dev = "cuda" if cuda else "cpu"
    env = environment(dev)
    out = Path(args.out) if args.out else OUT / f"corruption_throughput_{dev}"
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out.with_suffix(".csv"), index=False)
    cols = [c for c in ("reference_img_s", "ours_cpu_img_s", "ours_cuda_img_s") if c in df]
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
    if not cuda:
        md += ["", "No CUDA device on this machine: the GPU column is pending (run this script on a GPU)."]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
