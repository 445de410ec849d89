"""DSG's slack margins against real images: how far one real image's per-channel BN-input mean
and std lie from the layer's running mean and std (90th percentile over the images, median over
channels, in units of the layer's sigma), next to the margin that `robustart.quant.dsg` allows one
generated sample (MARGIN sigmas) and the one its first rule allowed (the 90th percentile of the
deviation of H*W i.i.d. Gaussian values' mean: z_0.95 / sqrt(H*W) sigmas).

  ROBUSTART_IMAGENET_SAMPLE=... python benchmarks/dsg_margins.py [--model efficientnet_lite0] [--n 16]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--n", type=int, default=16, help="real images, spread evenly over the sample's classes")
    args = ap.parse_args()
    data = os.environ.get("ROBUSTART_IMAGENET_SAMPLE")
    if not data:
        sys.exit("set ROBUSTART_IMAGENET_SAMPLE to the 1000-image ImageNet sample folder")
    from PIL import Image

    from robustart.quant import dsg
    from robustart.zoo.build import load_model

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = load_model(args.model, progress=False)
    files = sorted(Path(data).glob("*.JPEG"))
    files = files[:: max(1, len(files) // args.n)][: args.n]
    x = torch.stack([model.transform(Image.open(f).convert("RGB")) for f in files]).float() / 255
    bns = dsg._bn_layers(model)
    stats = dsg._Stats(bns)
    with torch.no_grad():
        model(x)
    stats.close()
    z = math.sqrt(2.0) * torch.erfinv(torch.tensor(0.9)).item()  # Phi^-1(0.95)
    print(f"{args.model}, {len(files)} real images; DSG margin: MARGIN={dsg.MARGIN} sigma")
    print("| BN layer | H*W | real 90th-pct deviation of the mean / sigma | of the std / sigma | DSG margin / sigma "
          "| first rule's margin / sigma |")
    print("|---:|---:|---:|---:|---:|---:|")
    for i in sorted({0, len(bns) // 8, len(bns) // 4, len(bns) // 2, 3 * len(bns) // 4, len(bns) - 1}):
        f, bn = stats.out[i], bns[i]
        sd = torch.sqrt(bn.running_var + bn.eps)
        hw = f.shape[2] * f.shape[3]
        mean, std = dsg._moments(f, per_sample=True)
        real = ((mean - bn.running_mean).abs().quantile(0.9, dim=0) / sd).median().item()
        real_sd = ((std - sd).abs().quantile(0.9, dim=0) / sd).median().item()
        margin = (dsg.slack_margins(sd, dsg.MARGIN)[0] / sd).median().item()
        print(f"| {i} | {hw} | {real:.3f} | {real_sd:.3f} | {margin:.3f} | {z / math.sqrt(hw):.4f} |")

if __name__ == "__main__":
    main()
