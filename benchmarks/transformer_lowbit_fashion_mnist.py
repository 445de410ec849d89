"""Low-bit forms of a small ViT and a small MLP-Mixer trained here on Fashion-MNIST: full precision
vs W4A4 (plain calibration vs APQ-ViT) vs BNN-style binarization vs BWTA, each under clean test
images, PGD at a small budget and Gaussian noise at ImageNet-C severity 3.

  OMP_NUM_THREADS=2 nice -n 10 python benchmarks/transformer_lowbit_fashion_mnist.py \
      [--train-limit 20000] [--fp-epochs 2] [--epochs 1] [--out runs/fmnist-lowbit]

Real training (one seed): the float networks with AdamW and cross-entropy; the binarized students
start from them and are distilled (KL to the float network's softmax): BNN with
`robustart.quant.train.train_binary`, BWTA with `train_bwta` (Smooth Multi-Stage Quantization,
17 -> 3 activation levels). W4A4 forms are post-training: 64 training images for calibration.
Every model is evaluated by the same code: top-1 on the first `--test` test images; PGD
(robustart.attack, `pgd:eps=0.03,steps=10`) and Gaussian noise (std 0.18 as ImageNet-C severity 3,
seeded) on the first `--robust` of them. Trained float models are registered as local zoo entries
(`fmnist-vit`, `fmnist-mixer`), so `robustart eval --model fmnist-vit@w4a4:method=apq --data fashion-mnist:test`
etc. run on them. Everything is checkpointed under --out; a rerun resumes and reuses finished rows.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

ARCHS = {
    "fmnist-vit": ("vit_tiny_patch16_224", "transformer",
                   dict(img_size=28, in_chans=1, patch_size=4, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0)),
    "fmnist-mixer": ("small_mixer", "mixer", dict(img_size=28, in_chans=1, patch_size=4, num_blocks=4, embed_dim=64)),
}
PGD = "pgd:eps=0.03,steps=10"
NOISE_STD = 0.18  # ImageNet-C gaussian_noise severity 3


def entry_for(name):
    from robustart.nas.train import DATA_MEAN_STD
    from robustart.zoo.registry import ModelEntry, WeightSource

    arch, family, kw = ARCHS[name]
    mean, std = DATA_MEAN_STD["fashion-mnist"]
    return ModelEntry(name=name, arch=arch, family=family, weights=WeightSource(), input_size=(1, 28, 28),
                      crop_pct=1.0, interpolation="bilinear", mean=mean, std=std, num_classes=10, arch_kwargs=kw,
                      tags=("standard",), description="trained by benchmarks/transformer_lowbit_fashion_mnist.py")


def train_fp(name, xtr, ytr, args, out: Path):
    """AdamW, cosine schedule, cross-entropy; checkpoint per epoch; registered as a local entry."""
    from safetensors.torch import load_file, save_file

    from robustart import settings
    from robustart.nas.train import entry_json
    from robustart.zoo import weights as W
    from robustart.zoo.build import ZooModel, build_network

    e = entry_for(name)
    torch.manual_seed(args.seed)
    model = ZooModel(build_network(e), e)
    wpath = out / f"{name}.safetensors"
    if wpath.is_file():
        model.net.load_state_dict(load_file(str(wpath)))
        return model.eval(), json.loads((out / f"{name}.train.json").read_text())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    n = len(xtr)
    per = n // args.batch_size
    total = per * args.fp_epochs
    state = out / f"{name}.state.pt"
    start = 0
    if state.is_file():
        st = torch.load(state, weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        start = st["epoch"]
    t0 = time.perf_counter()
    for ep in range(start, args.fp_epochs):
        model.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 100 + ep))
        for b in range(per):
            step = ep * per + b
            for g in opt.param_groups:
                g["lr"] = 0.5 * args.lr * (1 + math.cos(math.pi * step / total))
            idx = order[b * args.batch_size:(b + 1) * args.batch_size]
            loss = F.cross_entropy(model(xtr[idx].float() / 255), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": ep + 1}, state)
        print(f"{name}: fp epoch {ep + 1}/{args.fp_epochs} loss {loss.item():.3f}", flush=True)
    model.eval()
    save_file({k: v.contiguous() for k, v in model.net.state_dict().items()}, str(wpath))
    info = {"epochs": args.fp_epochs, "train_images": n, "seconds": time.perf_counter() - t0,
            "recipe": f"AdamW lr {args.lr} cosine, wd 0.05, batch {args.batch_size}, seed {args.seed}"}
    (out / f"{name}.train.json").write_text(json.dumps(info))
    sha = W.file_sha256(wpath)
    d = entry_json(e, str(wpath.resolve()), sha, sum(p.numel() for p in model.net.parameters()))
    d["recipe"] = info
    zoo = settings.home() / "zoo"
    zoo.mkdir(parents=True, exist_ok=True)
    (zoo / f"{name}.json").write_text(json.dumps(d, indent=2) + "\n")
    return model, info


def batches(xtr, ytr, args, epochs):
    g = torch.Generator().manual_seed(args.seed)
    out = []
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=g)
        out += [(xtr[perm[i:i + args.batch_size]].float() / 255, ytr[perm[i:i + args.batch_size]])
                for i in range(0, len(xtr) - args.batch_size + 1, args.batch_size)]
    return out


@torch.no_grad()
def accuracy(model, x, y, bs=500) -> float:
    model.eval()
    return 100.0 * sum(int((model(x[i:i + bs]).argmax(1) == y[i:i + bs]).sum()) for i in range(0, len(x), bs)) / len(x)


def evaluate_all(model, xte, yte, args) -> dict:
    from robustart.noises.adversarial import attack

    x = xte[: args.test].float() / 255
    y = yte[: args.test]
    xr, yr = x[: args.robust], y[: args.robust]
    t0 = time.perf_counter()
    clean = accuracy(model, x, y)
    adv = torch.cat([attack(model, xr[i:i + 100], yr[i:i + 100], PGD, seed=args.seed) for i in range(0, len(xr), 100)])
    pgd = accuracy(model, adv, yr)
    g = torch.Generator().manual_seed(args.seed)
    noisy = (xr + NOISE_STD * torch.randn(xr.shape, generator=g)).clamp(0, 1)
    noise = accuracy(model, noisy, yr)
    return {"clean": clean, "pgd": pgd, "noise": noise, "clean_robust_subset": accuracy(model, xr, yr),
            "eval_seconds": time.perf_counter() - t0}


def ptq(fp, spec: str, calib_x):
    from robustart.quant import apq
    from robustart.quant import fake as Q
    from robustart.quant.ptq import calibrate
    from robustart.quant.qconfig import parse_form

    cfg = parse_form(spec)[1]["quant"]
    m = copy.deepcopy(fp)
    Q.quantize_modules(m.net, cfg)
    if cfg.softmax == "mpq":
        apq.use_mpq(m.net)
    calibrate(m, calib_x, cfg)
    return m.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-limit", type=int, default=20000)
    ap.add_argument("--fp-epochs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1, help="distillation epochs of the BNN and BWTA students")
    ap.add_argument("--distill-steps", type=int, default=None, help="instead: this many distillation steps")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--robust", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default="fmnist-vit,fmnist-mixer")
    ap.add_argument("--only", default=None, help="run only these rows (fp,w4a4,apq,apq-uniform,bnn,bwta); "
                    "several processes with different --only share --out (each writes its own rows file)")
    ap.add_argument("--out", type=Path, default=Path("runs/fmnist-lowbit"))
    ap.add_argument("--table", type=Path, default=Path(__file__).parent / "results" / "transformer_lowbit_fashion_mnist.md")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from robustart.nas.train import load_split
    from robustart.quant import bwta as BW
    from robustart.quant.binary import binarize_model
    from robustart.quant.train import train_binary, train_bwta

    xtr, ytr, _ = load_split("fashion-mnist", "train", args.train_limit)
    xte, yte, _ = load_split("fashion-mnist", "test")
    args.out.mkdir(parents=True, exist_ok=True)
    rows_path = args.out / (f"rows-{args.only.replace(',', '-')}.json" if args.only else "rows.json")
    rows = {}
    for f in sorted(args.out.glob("rows*.json")):  # every process's finished rows
        rows.update(json.loads(f.read_text()))
    only = set(args.only.split(",")) if args.only else None
    tags = {"fp": "fp", "w4a4": "w4a4", "w4a4 apq": "apq", "w4a4 apq uniform-softmax": "apq-uniform",
            "bnn": "bnn", "bwta": "bwta"}
    t_start = time.perf_counter()
    calib_x = xtr[torch.randperm(len(xtr), generator=torch.Generator().manual_seed(args.seed))[:64]].float() / 255

    def row(key, build):
        if key in rows or (only is not None and tags[key.split("|")[1]] not in only):
            return
        t0 = time.perf_counter()
        model, extra = build()
        r = evaluate_all(model, xte, yte, args)
        r.update(extra, build_seconds=time.perf_counter() - t0 - r["eval_seconds"])
        rows[key] = r
        mine = json.loads(rows_path.read_text()) if rows_path.is_file() else {}
        mine[key] = r
        rows_path.write_text(json.dumps(mine, indent=1))
        for f in sorted(args.out.glob("rows*.json")):  # rows the other processes finished meanwhile
            rows.update({k: v for k, v in json.loads(f.read_text()).items() if k not in rows})
        print(key, {k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
        write_table(args, rows, time.perf_counter() - t_start)

    for name in [m for m in args.models.split(",") if m]:
        fp, info = train_fp(name, xtr, ytr, args, args.out)
        row(f"{name}|fp", lambda: (fp, {"how": f"cross-entropy, {info['epochs']} epochs", "train_seconds": info["seconds"]}))
        row(f"{name}|w4a4", lambda: (ptq(fp, "w4a4", calib_x), {"how": "min-max calibration, 64 images"}))
        row(f"{name}|w4a4 apq", lambda: (ptq(fp, "w4a4:method=apq", calib_x),
                                         {"how": "APQ-ViT: blockwise calibration + MPQ softmax"}))
        if ARCHS[name][1] == "transformer":
            row(f"{name}|w4a4 apq uniform-softmax", lambda: (ptq(fp, "w4a4:method=apq,softmax=uniform", calib_x),
                                                             {"how": "APQ-ViT blockwise calibration only"}))
        data = batches(xtr, ytr, args, args.epochs)
        if args.distill_steps:
            data = data[: args.distill_steps]
        how = f"{len(data)} steps of {args.batch_size}"

        def bnn():
            torch.manual_seed(args.seed)
            s = copy.deepcopy(fp)
            binarize_model(s.net, "bnn")
            t0 = time.perf_counter()
            train_binary(s, fp, data, steps=len(data), lr=args.lr, seed=args.seed, progress=False,
                         checkpoint=args.out / f"{name}.bnn.pt")
            return s.eval(), {"how": f"BNN, distilled {how}", "train_seconds": time.perf_counter() - t0}

        def bwta():
            torch.manual_seed(args.seed)
            s = copy.deepcopy(fp)
            BW.bwta_model(s.net)
            BW.calibrate(s, calib_x, k=BW.K_START)
            t0 = time.perf_counter()
            train_bwta(s, fp, data, steps=len(data), lr=args.lr, seed=args.seed, progress=False,
                       checkpoint=args.out / f"{name}.bwta.pt")
            return s.eval(), {"how": f"BWTA, multi-stage distilled {how}",
                              "train_seconds": time.perf_counter() - t0}

        for p in fp.parameters():
            p.requires_grad_(True)
        row(f"{name}|bnn", bnn)
        for p in fp.parameters():
            p.requires_grad_(True)
        row(f"{name}|bwta", bwta)
    write_table(args, rows, time.perf_counter() - t_start)
    print(f"wrote {args.table}")


def write_table(args, rows, elapsed):
    import robustart
    from robustart.engine.env import cpu_model, versions

    v = versions()
    load = os.getloadavg()
    lines = [
        "# Low-bit small transformers on Fashion-MNIST: FP vs W4A4 (plain / APQ-ViT) vs BNN vs BWTA",
        "",
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}; device: {cpu_model()}, "
        f"{torch.get_num_threads()} thread(s), shared (load average {load[0]:.1f} when written); wall time of this "
        f"pass {elapsed / 60:.0f} min",
        f"- versions: robustart {robustart.__version__}, torch {v.get('torch')}, timm {v.get('timm')}",
        f"- command: `OMP_NUM_THREADS={torch.get_num_threads()} nice -n 10 python "
        f"benchmarks/transformer_lowbit_fashion_mnist.py --train-limit {args.train_limit} --fp-epochs {args.fp_epochs} "
        f"--epochs {args.epochs}" + (f" --distill-steps {args.distill_steps}" if args.distill_steps else "")
        + f" --test {args.test} --robust {args.robust} --seed {args.seed}" + (f" --models {args.models}" if
                                                                              args.models != "fmnist-vit,fmnist-mixer" else "") + "`",
        "- networks (timm classes): ViT (patch 4, 49 tokens, dim 64, depth 4, 4 heads, MLP ratio 2) and MLP-Mixer "
        "(`small_mixer`: patch 4, dim 64, 4 blocks), 1x28x28 input; trained from scratch on the first "
        f"{args.train_limit} training images, AdamW lr {args.lr}, cosine, weight decay 0.05, batch {args.batch_size}, "
        f"{args.fp_epochs} epochs, seed {args.seed}.",
        "- W4A4: weights per channel, activations per tensor (first / last layer 8 bits), every linear input and "
        "(ViT) q, k, v and the softmax; calibrated on 64 training images. *apq*: `method=apq` (bottom-elimination "
        "blockwise calibration + MPQ softmax); *apq uniform-softmax*: the blockwise calibration alone.",
        "- BNN: `binarize_model(net, 'bnn')` (sign weights and inputs of every linear layer but the classifier, "
        "GELU -> Hardtanh), BWTA: `bwta_model` (binary weights, ternary inputs and attention operands, bool "
        f"probabilities), both distilled from the float network (steps in the table; Adam lr {args.lr} "
        "decayed linearly, KL to the teacher); BWTA through 17 -> 15 -> ... -> 3 activation levels.",
        f"- clean: top-1 on the first {args.test} test images; PGD `{PGD}` and Gaussian noise (std {NOISE_STD}, "
        f"ImageNet-C severity 3) on the first {args.robust}. One seed; differences of a point or two are not "
        "established by this run.",
        "",
        "| model | form | how | clean % | PGD % | noise % | clean % (robust subset) | train s |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, r in rows.items():
        name, form = key.split("|")
        lines.append(f"| {name} | {form} | {r.get('how', '')} | {r['clean']:.1f} | {r['pgd']:.1f} | {r['noise']:.1f} | "
                     f"{r['clean_robust_subset']:.1f} | {r.get('train_seconds', 0):.0f} |")
    planned = [f"{n}|{f}" for n in ARCHS for f in ("fp", "w4a4", "w4a4 apq") +
               (("w4a4 apq uniform-softmax",) if ARCHS[n][1] == "transformer" else ()) + ("bnn", "bwta")]
    missing = [k for k in planned if k not in rows and k.split("|")[0] in args.models.split(",")]
    skipped = sorted({k.split("|")[0] for k in planned} - set(args.models.split(",")))
    if missing:
        lines += ["", "Not run yet (CPU time on a shared 2-core machine): " + ", ".join(missing) + "."]
    if skipped:
        lines += ["", "Not run in this pass (CPU time on a shared 2-core machine): " + ", ".join(skipped)
                  + " (every row of it); `--models` selects them."]
    args.table.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
