"""Throughput of the ImageNet-S backends, images/s on real ImageNet JPEGs:

  decode   JPEG bytes -> uint8 RGB, per decoder (files read into memory first)
  resize   decoded image -> the model's eval geometry (shorter side to 256, center crop 224),
           per resizer
  scaling  the whole pipeline (read, decode, resize, crop) for a few variants, over 1, 2, 4 ...
           worker processes (a process pool, as the engine's DataLoader and `imagenet-s build` use)

  python benchmarks/decode_resize_throughput.py --data ../shared/data/imagenet-sample --images 50

Each timing is the best of `--repeats` passes after a warm-up pass (Pillow-SIMD's worker starts
in the warm-up). Writes benchmarks/results/decode_resize_throughput.{md,csv}.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timezone
from pathlib import Path


from robustart.imagenet_s import decoders as D
from robustart.imagenet_s import resize as R
from robustart.engine.env import cpu_model
from robustart.imagenet_s.pipeline import Pipeline

OUT = Path(__file__).resolve().parent / "results"




def best_rate(fn, n: int, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def _run_pipeline(args):
    pipeline, paths = args
    for p in paths:
        pipeline(p)
    return len(paths)


def scaling_rate(pipeline: Pipeline, paths: list[str], workers: int, repeats: int) -> float:
    import multiprocessing as mp

    chunks = [paths[i::workers * 4] for i in range(workers * 4)]
    with mp.get_context("fork").Pool(workers) as pool:
        pool.map(_run_pipeline, [(pipeline, c[:2]) for c in chunks])  # warm-up: imports, Pillow-SIMD workers
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            pool.map(_run_pipeline, [(pipeline, c) for c in chunks])
            best = min(best, time.perf_counter() - t)
    return len(paths) / best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/imagenet-sample")
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", default="1,2", help="worker counts for the scaling table, e.g. 1,2,4,8")
    ap.add_argument("--out", default=str(OUT / "decode_resize_throughput"))
    args = ap.parse_args()

    import pandas as pd
    import torch

    torch.set_num_threads(1)  # as in a DataLoader worker: one thread per process
    files = sorted(Path(args.data).glob("n*_*.JPEG"))
    files = files[:: max(1, len(files) // args.images)][: args.images]
    datas = [f.read_bytes() for f in files]
    rows = []
    for name in D.DECODERS:
        why = D.unavailable(name)
        if why:
            print(f"skip decoder {name}: {why}")
            continue
        rate = best_rate(lambda: [D.decode(name, d) for d in datas], len(datas), args.repeats)
        rows.append({"table": "decode", "backend": name, "workers": 1, "images_per_s": rate, "version": D.get(name).version()})
        print(f"decode {name:20s} {rate:8.1f} img/s")
    if torch.cuda.is_available():  # nvJPEG as a batch decoder would use it: one call, output left on the GPU
        from torchvision.io import ImageReadMode, decode_jpeg

        tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]

        def batched():
            decode_jpeg(tensors, mode=ImageReadMode.RGB, device="cuda")
            torch.cuda.synchronize()

        rate = best_rate(batched, len(datas), args.repeats)
        rows.append({"table": "decode", "backend": f"torchvision-cuda, batch of {len(datas)} kept on the GPU",
                     "workers": 1, "images_per_s": rate, "version": D.get("torchvision-cuda").version()})
        print(f"decode torchvision-cuda batched {rate:8.1f} img/s")
    imgs = [D.decode("pil", d) for d in datas]
    simd = D.unavailable("pil-simd") is None
    for name in R.RESIZERS:
        if name.startswith("pil-simd-") and not simd:
            continue
        rate = best_rate(lambda: [R.apply_geometry(im, name, 224, 0.875, "eval") for im in imgs], len(imgs), args.repeats)
        rows.append({"table": "resize", "backend": name, "workers": 1, "images_per_s": rate, "version": ""})
        print(f"resize {name:20s} {rate:8.1f} img/s")
    paths = [str(f) for f in files] * 4  # longer passes: pool start-up and stragglers matter less
    variants = [("pil", "pil-bicubic"), ("opencv", "opencv-linear"), ("turbo-fast", "torch-bilinear-aa"),
                ("ffmpeg", "pil-bicubic")] + ([("pil-simd", "pil-simd-bicubic")] if simd else [])
    for d, r in variants:
        if D.unavailable(d):
            continue  # reported in the decode table's skips above
        p = Pipeline(d, r)
        for w in [int(x) for x in args.workers.split(",")]:
            rate = scaling_rate(p, paths, w, args.repeats)
            rows.append({"table": "pipeline", "backend": p.label, "workers": w, "images_per_s": rate, "version": ""})
            print(f"pipeline {p.label:30s} workers {w} {rate:8.1f} img/s")

    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out.with_suffix(".csv"), index=False)
    env = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": f"{cpu_model()} ({os.cpu_count()} logical cores; torch threads 1)",
        "images": f"{len(files)} ImageNet validation JPEGs from {Path(args.data).name}, best of {args.repeats} passes",
        "torch": torch.__version__,
        **({"gpu": torch.cuda.get_device_name()} if torch.cuda.is_available() else {}),
        "load average at the end (1 min)": f"{os.getloadavg()[0]:.1f}: on a shared machine the scaling table "
                                           "shows contention as much as the backends",
    }
    lines = ["# ImageNet-S backends: throughput", "", *[f"- {k}: {v}" for k, v in env.items()], ""]
    for table, title in (("decode", "Decode (JPEG bytes -> RGB), one process"),
                         ("resize", "Resize to the eval geometry (shorter side 256, crop 224), one process")):
        lines += [f"## {title}", "", "| backend | images/s | version |", "|---|---:|---|"]
        for _, r in df[df.table == table].sort_values("images_per_s", ascending=False).iterrows():
            lines.append(f"| {r.backend} | {r.images_per_s:.1f} | {r.version} |")
        lines.append("")
    piv = df[df.table == "pipeline"].pivot(index="backend", columns="workers", values="images_per_s")
    ws = list(piv.columns)
    lines += ["## Whole pipeline (read + decode + resize + crop) by worker processes", "",
              "| decoder/resizer | " + " | ".join(f"{w} worker{'s' if w > 1 else ''}" for w in ws) + " |",
              "|---|" + "---:|" * len(ws)]
    for label, r in piv.iterrows():
        lines.append(f"| {label} | " + " | ".join(f"{r[w]:.1f}" for w in ws) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
