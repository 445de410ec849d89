"""Fidelity of the batched torch corruptions against the `imagecorruptions` reference.

  python benchmarks/corruption_fidelity.py --data ../shared/data/imagenet-sample \
      --pixel-images 50 --error-images 1000 --error-severities 3

Part 1, pixels (every corruption x severity, `--pixel-images` images): deterministic corruptions
are compared image by image (PSNR, mean absolute difference, share of differing values);
stochastic ones cannot match pixel for pixel, so their statistics are compared: the mean
absolute change from the clean image, the mean signed change and the output's standard
deviation, ours vs the reference (means over images).

Part 2, end to end (`--error-images` images, `--error-severities`): top-1 error of
efficientnet_lite0 under ours and under the reference on the same images, with the paired 95%
interval of the difference.

Writes benchmarks/results/corruption_fidelity.{md,csv}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corruption_common import environment, header, load_images  # noqa: E402

from robustart.noises.corruption import CorruptionNoise  # noqa: E402
from robustart.noises.corruptions import constants as K  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def corrupt(name, severity, impl, x, ids, seed=0, batch=25):
    noise = CorruptionNoise({"name": "corruption", "corruption": name, "severity": severity, "impl": impl, "jpeg": False})
    return torch.cat([noise.corrupt_uint8(x[i:i + batch], ids[i:i + batch], seed) for i in range(0, len(ids), batch)])


class Rows:
    """Finished rows, appended to a JSON-lines file as they are made, so an interrupted run
    resumes where it stopped (a row is reused only for the same part, image count, versions and
    corruption code)."""

    def __init__(self, path: Path, env: dict):
        import hashlib

        import robustart.noises.corruption as C

        code = hashlib.sha256()  # the corruption code itself: a row is reused only for the same code
        for f in sorted((Path(C.__file__).parent / "corruptions").glob("*.py")) + [Path(C.__file__)]:
            code.update(f.read_bytes())
        self.path = path
        self.stamp = {**{k: env.get(k) for k in ("torch", "numpy", "imagecorruptions-imaug")}, "code": code.hexdigest()[:16]}
        self.done = {}
        if path.exists():
            for line in path.read_text().splitlines():
                r = json.loads(line)
                if r.pop("_stamp", None) == self.stamp:
                    self.done[(r.pop("_part"), r.pop("_n"), r["corruption"], r["severity"])] = r

    def get(self, part, n, name, sev):
        return self.done.get((part, n, name, sev))

    def add(self, part, n, row):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({**row, "_part": part, "_n": n, "_stamp": self.stamp}) + "\n")


def pixel_rows(x, ids, severities, cache: Rows):
    rows = []
    clean = x.double()
    for name in K.ALL:
        for sev in severities:
            if (row := cache.get("pixel", len(ids), name, sev)) is not None:
                rows.append(row)
                continue
            ours = corrupt(name, sev, "torch", x, ids).double()
            ref = corrupt(name, sev, "reference", x, ids).double()
            row = {"corruption": name, "severity": sev, "kind": "stochastic" if name in K.STOCHASTIC else "deterministic"}
            d = (ours - ref).abs()
            mse = float((d**2).mean())
            row["psnr_db"] = round(10 * math.log10(255**2 / mse), 2) if mse > 0 else float("inf")
            row["mad"] = round(float(d.mean()), 4)
            row["share_differing"] = round(float((d > 0).double().mean()), 4)
            for tag, y in (("ours", ours), ("ref", ref)):
                row[f"change_{tag}"] = round(float((y - clean).abs().mean()), 3)
                row[f"bias_{tag}"] = round(float((y - clean).mean()), 3)
                row[f"std_{tag}"] = round(float(y.std()), 3)
            row["change_rel_diff"] = round(abs(row["change_ours"] - row["change_ref"]) / max(row["change_ref"], 1e-9), 4)
            rows.append(row)
            cache.add("pixel", len(ids), row)
            print(row, flush=True)
    return rows


@torch.inference_mode()
def predictions(model, x, batch=50):
    return torch.cat([model(x[i:i + batch].float() / 255).argmax(1) for i in range(0, len(x), batch)])


def error_rows(model, x, ids, y, severities, cache: Rows):
    rows = []
    clean_err = float((predictions(model, x) != y).double().mean())
    for name in K.ALL:
        for sev in severities:
            if (row := cache.get("error", len(ids), name, sev)) is not None:
                rows.append(row)
                continue
            t = time.time()
            wrong = {}
            for impl in ("torch", "reference"):
                wrong[impl] = (predictions(model, corrupt(name, sev, impl, x, ids)) != y).double()
            a, b = wrong["torch"], wrong["reference"]
            diff = float((a - b).mean())
            # paired interval of the difference: per-image differences are in {-1, 0, 1}
            se = float((a - b).std(unbiased=True)) / math.sqrt(len(a))
            rows.append({
                "corruption": name, "severity": sev, "n": len(a),
                "error_ours": round(100 * float(a.mean()), 2), "error_ref": round(100 * float(b.mean()), 2),
                "diff_points": round(100 * diff, 2), "ci95_points": round(100 * 1.96 * se, 2),
                "disagree": round(100 * float((a != b).double().mean()), 2),
                "clean_error": round(100 * clean_err, 2),
            })
            cache.add("error", len(ids), rows[-1])
            print(rows[-1], f"{time.time() - t:.0f}s", flush=True)
    return rows


def markdown(env, pix, err, args) -> str:
    out = ["# Corruption fidelity: batched torch vs imagecorruptions (reference)", "", header(env), ""]
    out.append(f"Images: the first images (by id) of `{Path(args.data).name}` at efficientnet_lite0's input "
               "geometry (224x224 uint8), seed 0.")
    if err:
        sevs = sorted({r["severity"] for r in err})
        out += ["", f"## Top-1 error of efficientnet_lite0 (%), severity {', '.join(map(str, sevs))}, "
                f"{err[0]['n']} images (clean error {err[0]['clean_error']}%)", "",
                "diff = ours - reference; ci95 = paired 95% interval half-width; disagree = share of images "
                "where exactly one of the two is wrong.", "",
                "| corruption | sev | ours | reference | diff | ci95 | disagree |", "|---|---|---|---|---|---|---|"]
        for r in err:
            out.append(f"| {r['corruption']} | {r['severity']} | {r['error_ours']:.2f} | {r['error_ref']:.2f} | "
                       f"{r['diff_points']:+.2f} | {r['ci95_points']:.2f} | {r['disagree']:.2f} |")
        worst = max(err, key=lambda r: abs(r["diff_points"]))
        out += ["", f"Largest |diff|: {worst['corruption']} severity {worst['severity']}: {worst['diff_points']:+.2f} points."]
    if pix:
        out += ["", f"## Pixels, {args.pixel_images} images, every severity", "",
                "Deterministic: PSNR (dB) and mean absolute difference (levels of 255) of ours vs the reference; "
                "share_differing = share of values that differ (by 1 level unless stated). Stochastic: mean "
                "absolute change from the clean image, mean signed change and output std, ours / reference.", "",
                "| corruption | sev | kind | PSNR | MAD | differing | change ours / ref | bias ours / ref | std ours / ref |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in pix:
            det = r["kind"] == "deterministic"
            out.append(
                f"| {r['corruption']} | {r['severity']} | {r['kind']} | "
                f"{r['psnr_db'] if det else ''} | {r['mad'] if det else ''} | {r['share_differing'] if det else ''} | "
                f"{r['change_ours']:.2f} / {r['change_ref']:.2f} | {r['bias_ours']:.2f} / {r['bias_ref']:.2f} | "
                f"{r['std_ours']:.2f} / {r['std_ref']:.2f} |")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/imagenet-sample")
    ap.add_argument("--pixel-images", type=int, default=50)
    ap.add_argument("--error-images", type=int, default=1000)
    ap.add_argument("--error-severities", default="3")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(OUT / "corruption_fidelity"))
    ap.add_argument("--rows", type=Path, default=Path.home() / ".robustart" / "bench-fidelity" / "rows.jsonl",
                    help="finished rows (JSON lines): a rerun resumes from them")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import pandas as pd

    import robustart

    model = robustart.load_model("efficientnet_lite0").eval()
    env = environment()
    cache = Rows(args.rows, env)
    pix = []
    if args.pixel_images:
        x, ids, _ = load_images(args.data, args.pixel_images, model.transform)
        pix = pixel_rows(x, ids, K.SEVERITIES, cache)
    err = []
    if args.error_images:
        x, ids, y = load_images(args.data, args.error_images, model.transform)
        err = error_rows(model, x, ids, y, [int(s) for s in args.error_severities.split(",")], cache)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown(env, pix, err, args))
    if pix:
        pd.DataFrame(pix).to_csv(out.with_name(out.name + "_pixels.csv"), index=False)
    if err:
        pd.DataFrame(err).to_csv(out.with_name(out.name + "_errors.csv"), index=False)
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
