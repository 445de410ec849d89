"""The cost of the RobustART protocol over the whole zoo on the 50,000 ImageNet val images, from
the protocol's own noise configs and timm's published per-model GPU throughputs. Prints the
tables of benchmarks/results/zoo_protocol_estimate.md.

    python benchmarks/zoo_protocol_estimate.py TIMM_RESULTS_DIR

TIMM_RESULTS_DIR: the `results/` folder of a checkout of huggingface/pytorch-image-models, which
holds benchmark-infer-amp-nchw-pt291-cu128-4090.csv (inference, AMP, batch 1024, RTX 4090) and
benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv and benchmark-infer-amp-nchw-pt113-cu117-rtx3090.csv
(a training step = forward + backward, the nearest published figure for an attack step).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

N = 50_000


def passes(cfg: dict) -> tuple[float, float]:
    """(forward passes, forward+backward passes) per image of one job, without early stops; the
    clean pass of a suite is shared and counted once per model (not here)."""
    name = cfg["name"]
    if name in ("fgsm",):
        return 1, 1
    if name in ("pgd", "mim"):
        return 1, cfg.get("steps", 10) * max(1, cfg.get("restarts", 1))
    if name == "cw":
        return 1, cfg.get("steps", 100) * max(1, cfg.get("binary_steps", 5))
    return 1, 0  # clean, a corruption, an ImageNet-S variant, a precision variant: one forward


def main() -> None:
    from make_study_store import protocol, zoo

    res = Path(sys.argv[1])
    inf = pd.read_csv(res / "benchmark-infer-amp-nchw-pt291-cu128-4090.csv")
    inf3 = pd.read_csv(res / "benchmark-infer-amp-nchw-pt113-cu117-rtx3090.csv")
    tr3 = pd.read_csv(res / "benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv")

    def look(df, arch, size, col, scol):
        d = df[df["model"] == arch]
        if len(d[d[scol] == size]):
            d = d[d[scol] == size]
        return float(d[col].iloc[0])

    noises = protocol()
    f = sum(passes(c)[0] for c in noises) + 1  # + the shared clean pass of the suites
    fb = sum(passes(c)[1] for c in noises)
    fb_cw = sum(passes(c)[1] for c in noises if c["name"] == "cw")
    rows = []
    for e in zoo():
        s = e.input_size[1]
        i4 = look(inf, e.arch, s, "infer_samples_per_sec", "infer_img_size")
        i3 = look(inf3, e.arch, s, "infer_samples_per_sec", "infer_img_size")
        t3 = look(tr3, e.arch, s, "train_samples_per_sec", "train_img_size")
        t4 = t3 * i4 / i3  # a 4090 training step, scaled from the 3090 by the inference ratio
        fwd_h = f * N / i4 / 3600
        att_h = fb * N / t4 / 3600
        rows.append({"model": e.name, "arch": e.arch, "size": s, "infer_img_s": round(i4), "fb_img_s": round(t4),
                     "forward_h": fwd_h, "attack_h": att_h, "attack_h_cw_100": (fb - fb_cw + fb_cw / 5) * N / t4 / 3600,
                     "total_h": fwd_h + att_h})
    df = pd.DataFrame(rows)
    print(f"jobs per model: {len(noises)}; zoo entries: {len(df)}; jobs: {len(noises) * len(df)}")
    print(f"per image and model: {f} forward passes, {fb} forward+backward passes ({fb_cw} of them C&W)")
    print("| " + " | ".join(df.columns) + " |")
    print("|" + "---|" * len(df.columns))
    for r in df.itertuples(index=False):
        print("| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in r) + " |")
    tot = df[["forward_h", "attack_h", "attack_h_cw_100", "total_h"]].sum()
    print(tot.round(1).to_dict())
    for g in (1, 8, 64):
        print(f"{g} GPUs: {tot['total_h'] / g:.1f} h upper bound; "
              f"{(tot['forward_h'] + tot['attack_h_cw_100']) / g:.1f} h with C&W stopping after one binary step")


if __name__ == "__main__":
    main()
