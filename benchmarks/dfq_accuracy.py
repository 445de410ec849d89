"""Data-free calibration vs real images: efficientnet_lite0 on the 1000-image ImageNet sample.

Each quantized form (W8A8, W6A6, W4A8, W4A4 plain, W4A4 MSE + BRECQ/AdaRound reconstruction) is
calibrated on four sources of `calib` images: real (drawn from the sample; 'held-out' top-1
excludes them), DSG, ZeroQ-style and Gaussian noise images (robustart.quant.dsg). Robustness of
each (form, source) on the first `--robust-limit` sample images: PGD at the small budget and one
corruption at severity 3. Every number comes from a job in the results store, so a rerun reuses
finished jobs; rows run in priority order and the table is rewritten after each.

  OMP_NUM_THREADS=2 ROBUSTART_IMAGENET_SAMPLE=... nice -n 10 python benchmarks/dfq_accuracy.py \
      [--store DIR] [--calib 32] [--robust-limit 50] [--rows N] [--out benchmarks/results/dfq_accuracy.md]

Generated images are made on first use (cached in $ROBUSTART_HOME/calib/); `robustart quant
calib-gen efficientnet_lite0 --method dsg --n 16 --iters 60` makes the ones this table uses ahead
(and writes a grid PNG).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

MODEL = "efficientnet_lite0"
SOURCES = ["real", "dsg", "zeroq", "noise"]  # table columns
RUN_ORDER = ["real", "noise", "zeroq", "dsg"]  # generated images last: they may still be in the making
FORMS = [  # (label, form spec head), in priority order
    ("w8a8", "w8a8"),
    ("w4a4", "w4a4"),  # before reconstruction: the cheap W4A4 cells answer DSG vs ZeroQ-style first
    ("w4a4 +recon", "w4a4:observer=mse,recon=on,iters=50"),
    ("w6a6", "w6a6"),
    ("w4a8", "w4a8"),
]
GEN_ITERS = 60  # optimizer steps of the generators (the forms' default is 200): CPU budget
PGD = "pgd:budget=small,steps=5"
CORRUPTION = "corruption:gaussian_noise:3"


def spec_of(form: str, source: str, calib: int) -> str:
    sep = "," if ":" in form else ":"
    extra = f"calib={calib}" + ("" if source == "real" else f",calib_data={source}")
    if source in ("dsg", "zeroq"):
        extra += f",gen_iters={GEN_ITERS}"
    return f"{MODEL}@{form}{sep}{extra}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default=str(Path.home() / ".robustart" / "bench-dfq"))
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--limit", type=int, default=200, help="clean evaluation images (first N by id; 0: all 1000)")
    ap.add_argument("--robust-limit", type=int, default=50, help="images for PGD and the corruption")
    ap.add_argument("--rows", type=int, default=None, help="run only the first N jobs of the plan")
    ap.add_argument("--no-robust", action="store_true")
    ap.add_argument("--wait-gen", type=float, default=0, help="minutes to wait for generated images being made elsewhere")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dfq_accuracy.md"))
    args = ap.parse_args()

    from robustart.engine.evaluate import evaluate

    data = os.environ.get("ROBUSTART_IMAGENET_SAMPLE")
    if not data:
        sys.exit("set ROBUSTART_IMAGENET_SAMPLE to the 1000-image ImageNet sample folder")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    # the plan: fp first; then per form, the four sources' clean jobs; robustness after all clean
    # priority order (each row is written as soon as it is done): the two forms the question is
    # about (W8A8, W4A4 reconstructed) on every source, their robustness, then the rest
    plan = [("clean", "fp", "-", MODEL)]
    robust = [] if args.no_robust else [PGD, CORRUPTION]
    for label, form in FORMS[:3]:
        plan += [("clean", label, s, spec_of(form, s, args.calib)) for s in RUN_ORDER]
    for noise in robust:
        plan.append((noise, "fp", "-", MODEL))
        for label, form in FORMS[:2]:
            plan += [(noise, label, s, spec_of(form, s, args.calib)) for s in RUN_ORDER]
    for label, form in FORMS[3:]:
        plan += [("clean", label, s, spec_of(form, s, args.calib)) for s in RUN_ORDER]
    for noise in robust:
        for label, form in FORMS[2:]:
            plan += [(noise, label, s, spec_of(form, s, args.calib)) for s in RUN_ORDER]
    results = {}
    t_start = time.perf_counter()
    todo = plan if args.rows is None else plan[: args.rows]
    for noise, label, source, spec in todo:
        if source in ("dsg", "zeroq"):
            _wait_for_images(spec, args.wait_gen)
        t0 = time.perf_counter()
        limit = (args.limit or None) if noise == "clean" else args.robust_limit
        res = evaluate(spec, data, noise=noise, limit=limit, batch_size=args.batch_size, store=args.store,
                       progress=False)
        rec = res.records
        held = _held_out(rec, spec, data)
        results[(noise, label, source)] = dict(spec=spec, n=len(rec), top1=_pct(rec), held=held,
                                               reused=res.reused, seconds=time.perf_counter() - t0,
                                               calib=res.meta.get("calibration"))
        r = results[(noise, label, source)]
        print(f"{noise:32s} {label:12s} {source:6s} top1 {r['top1']:6.2f} held {r['held']:6.2f} "
              f"({'reused' if res.reused else '%.0fs' % r['seconds']})", flush=True)
        _write(args, plan, results, time.perf_counter() - t_start)
    print(f"wrote {args.out}")


def _wait_for_images(spec: str, minutes: float) -> None:
    """With --wait-gen: while `robustart quant calib-gen` makes this source's images in another
    process, wait for its cache file instead of generating them a second time."""
    if minutes <= 0:
        return
    from robustart.quant import dsg
    from robustart.quant.forms import calibration_set
    from robustart.zoo import weights as W
    from robustart.zoo.registry import get_entry

    e = get_entry(spec)
    cal = calibration_set(e.quant)
    base = get_entry(MODEL)
    path = dsg.cache_path(base, W.file_sha256(W.fetch(base, progress=False)), cal.cfg)
    t0 = time.time()
    while not path.is_file() and time.time() - t0 < minutes * 60:
        time.sleep(30)


def _pct(rec) -> float:
    from robustart.results import metrics as M

    return M.top1(rec)


def _held_out(rec, spec, data) -> float:
    """Top-1 over the records whose image was not a calibration image (real calibration only)."""
    from robustart.zoo.registry import get_entry

    e = get_entry(spec)
    if e.form == "fp" or (e.quant.calib_data is not None):
        return _pct(rec)
    from robustart.data.sources import open_source
    from robustart.quant.forms import calibration_set

    ids = {s.id for s in calibration_set(e.quant, open_source(data)).samples}
    return _pct(rec[~rec["sample_id"].isin(ids)])


def _cell(results, key, held=True) -> str:
    r = results.get(key)
    if r is None:
        return "not run"
    v = r["held"] if held else r["top1"]
    return f"{v:.1f}"


def _write(args, plan, results, elapsed) -> None:
    import robustart
    from robustart.engine.env import cpu_model, versions

    v = versions()
    load = os.getloadavg()
    lines = [
        f"# Data-free vs real calibration: {MODEL} on the 1000-image ImageNet sample",
        "",
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}; wall time of this pass "
        f"{elapsed / 60:.0f} min (finished jobs are reused from the store)",
        f"- device: {cpu_model()}, {torch.get_num_threads()} thread(s), shared with other work "
        f"(load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} when written)",
        f"- versions: robustart {robustart.__version__}, torch {v.get('torch')}, timm {v.get('timm')}",
        f"- command: `OMP_NUM_THREADS={torch.get_num_threads()} nice -n 10 python benchmarks/dfq_accuracy.py "
        f"--calib {args.calib} --limit {args.limit} --robust-limit {args.robust_limit}`",
        f"- every form calibrates on {args.calib} images (`calib={args.calib}`, seed 0): *real* = drawn from the "
        f"sample itself; *dsg*, *zeroq*, *noise* = generated from the model (`calib_data=...`, {GEN_ITERS} Adam steps "
        "on one batch of 16 at lr 0.1, see robustart/quant/dsg.py). Clean top-1 over the first "
        f"{args.limit or 1000} images (by id); for *real*, over those not used for calibration (the number shown; the "
        "other sources never see a sample image).",
        f"- robustness on the first {args.robust_limit} images (sorted ids): `{PGD}` (Linf eps 0.5/255, 5 steps) "
        f"and `{CORRUPTION}`; top-1 under the noise (for *real*, again without its calibration images).",
        "- weights per output channel, symmetric; activations per tensor, asymmetric; first conv and classifier "
        "at 8 bits; backend fake; reconstruction: MSE ranges + 50 AdaRound iterations per block.",
        "",
        "## Clean top-1 (%)",
        "",
        "| form | real (held-out) | dsg | zeroq | noise |",
        "|---|---:|---:|---:|---:|",
    ]
    lines[0] = lines[0].replace("the 1000-image ImageNet sample", f"the ImageNet sample (first {args.limit or 1000} images)")
    fp = results.get(("clean", "fp", "-"))
    lines.append(f"| fp | {fp['top1']:.1f} | | | |" if fp else "| fp | not run | | | |")
    for label, _ in FORMS:
        lines.append(f"| {label} | " + " | ".join(_cell(results, ("clean", label, s)) for s in SOURCES) + " |")
    for noise in (PGD, CORRUPTION):
        lines += ["", f"## Under `{noise}`: top-1 (%) on the first {args.robust_limit} images", "",
                  "| form | real (held-out) | dsg | zeroq | noise |", "|---|---:|---:|---:|---:|"]
        fp = results.get((noise, "fp", "-"))
        lines.append(f"| fp | {fp['top1']:.1f} | | | |" if fp else "| fp | not run | | | |")
        for label, _ in FORMS:
            lines.append(f"| {label} | " + " | ".join(_cell(results, (noise, label, s)) for s in SOURCES) + " |")
    lines += ["", "## Jobs", "", "| noise | form | source | model spec | n | top-1 all | held-out | time |",
              "|---|---|---|---|---:|---:|---:|---:|"]
    for (noise, label, source), r in results.items():
        lines.append(f"| {noise} | {label} | {source} | `{r['spec']}` | {r['n']} | {r['top1']:.1f} | {r['held']:.1f} | "
                     f"{'reused' if r['reused'] else '%.0f s' % r['seconds']} |")
    missing = [(n, l, s) for n, l, s, _ in plan if (n, l, s) not in results]
    if missing:
        lines += ["", f"Not run in this pass ({len(missing)} jobs; CPU time on a shared 2-core machine): "
                  + ", ".join(f"{l}/{s} {n}" for n, l, s in missing) + "."]
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
