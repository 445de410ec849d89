"""DSG's margin, chosen over seeds: efficientnet_lite0 at W4A4 (MSE ranges + block reconstruction)
calibrated on 16 generated images, ZeroQ-style vs DSG at several SDA margins (a form's
gen_margin=, in units of each layer's BN std), one job per (source, margin, seed), clean top-1 on
the 1000-image sample. The forms are those of benchmarks/dfq_accuracy.py (same specs, same store:
the seed-0 jobs are shared with its tables).

  OMP_NUM_THREADS=2 ROBUSTART_IMAGENET_SAMPLE=... nice -n 10 python benchmarks/dsg_margin_sweep.py \
      [--seeds 0,1,2] [--margins 0.1,0.25,0.5] [--limit 0] [--store DIR] [--out benchmarks/results/dsg_margin_sweep.md]

Finished jobs come back from the store, so a pass with more seeds or margins computes only the
new ones; the results JSON beside the page keeps every job across passes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import dfq_accuracy as D  # noqa: E402  (the table this sweep feeds: one spec format, one store)

FORM = dict(D.FORMS)["w4a4 +recon"]


def spec(source: str, seed: int, margin: float | None, calib: int, gen_iters: int) -> str:
    s = D.spec_of(FORM, source, calib, gen_iters)
    if seed:
        s += f",seed={seed}"
    if margin is not None:
        s += f",gen_margin={margin:g}"
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--margins", default="0.1,0.25,0.5", help="DSG margins (BN stds); the default one is "
                    "run without gen_margin=, so its seed-0 job is dfq_accuracy's")
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--gen-iters", type=int, default=D.GEN_ITERS)
    ap.add_argument("--limit", type=int, default=0, help="clean evaluation images (first N by id; 0: all 1000)")
    ap.add_argument("--store", default=str(Path.home() / ".robustart" / "bench-dfq"))
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dsg_margin_sweep.md"))
    args = ap.parse_args()
    data = os.environ.get("ROBUSTART_IMAGENET_SAMPLE")
    if not data:
        sys.exit("set ROBUSTART_IMAGENET_SAMPLE to the 1000-image ImageNet sample folder")
    from robustart.engine.evaluate import evaluate
    from robustart.quant import dsg
    from robustart.results.store import atomic_write_json

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    seeds = [int(s) for s in args.seeds.split(",")]
    margins = [float(m) for m in args.margins.split(",")]
    runs = [("zeroq", None)] + [("dsg", m) for m in margins]
    path = Path(args.out).with_suffix(".json")
    state = D._load(path)
    settings = dict(model=D.MODEL, form=FORM, calib=args.calib, gen_iters=args.gen_iters, limit=args.limit)
    if state.get("settings", settings) != settings:
        sys.exit(f"{path} holds jobs run with {state['settings']}, not {settings}: pass another --out")
    this = D.machine_record(f"OMP_NUM_THREADS={torch.get_num_threads()} nice -n 10 python benchmarks/dsg_margin_sweep.py "
                            f"--seeds {args.seeds} --margins {args.margins} --limit {args.limit}")
    jobs = {(j["source"], j["margin"], j["seed"]): j for j in state["jobs"]}
    todo = [(s, m, seed) for seed in seeds for s, m in runs]
    print(f"{len(todo)} job(s); results in {path} and {args.out}", flush=True)
    for source, margin, seed in todo:
        default = margin is not None and margin == dsg.MARGIN
        sp = spec(source, seed, None if default else margin, args.calib, args.gen_iters)
        t0 = time.perf_counter()
        res = evaluate(sp, data, noise="clean", limit=args.limit or None, batch_size=args.batch_size,
                       store=args.store, progress=False)
        job = dict(source=source, margin=margin, seed=seed, spec=sp, key=res.key, n=len(res.records),
                   top1=D._pct(res.records),
                   seconds=None if res.reused else round(time.perf_counter() - t0), pass_=this["id"])
        if not D.keeps_recorded(jobs.get((source, margin, seed)), res.key, res.reused):
            jobs[(source, margin, seed)] = job
        print(f"{source:6s} margin {margin!s:5s} seed {seed}  top1 {job['top1']:6.2f} "
              f"({'reused' if res.reused else '%ds' % job['seconds']})", flush=True)
        this = D.ended(this)
        state = dict(settings=settings, passes=[p for p in state["passes"] if p["id"] != this["id"]] + [this],
                     jobs=sorted(jobs.values(), key=lambda j: (j["source"] != "zeroq", j["margin"] or 0, j["seed"])))
        atomic_write_json(path, state)
        write(Path(args.out), state, args)
    print(f"wrote {args.out}")


def write(out: Path, state: dict, args) -> None:
    from robustart.quant import dsg

    jobs = state["jobs"]
    seeds = sorted({j["seed"] for j in jobs})
    cols = []
    for j in jobs:
        if (j["source"], j["margin"]) not in cols:
            cols.append((j["source"], j["margin"]))
    cell = {(j["source"], j["margin"], j["seed"]): j["top1"] for j in jobs}

    def name(s, m):
        return "ZeroQ-style" if s == "zeroq" else f"DSG margin {m:g}" + (" (default)" if m == dsg.MARGIN else "")

    n = args.limit or 1000
    lines = [f"# DSG's margin over seeds: {D.MODEL} W4A4 + reconstruction, {args.calib} generated images", "",
             f"Clean top-1 (%) on the first {n} sample images of `{D.MODEL}@{FORM}` calibrated on {args.calib} images "
             f"generated with {args.gen_iters} Adam steps (`calib_data=zeroq` or `calib_data=dsg,gen_margin=K`, "
             "`seed=S` seeds both the generator's starting noise and the reconstruction's minibatch draws). Written by "
             "`benchmarks/dsg_margin_sweep.py` from `dsg_margin_sweep.json`; the seed-0 specs are those of "
             "`dfq_accuracy_1000.md`. Real-image calibration of the same form: 75.7% (`dfq_accuracy_1000.md`).", "",
             "## Passes", "", "| pass (start, UTC) | end | command | device | versions | load average at end |",
             "|---|---|---|---|---|---|"]
    for p in state["passes"]:
        lines.append(f"| {p['id']} | {p.get('end', '')} | `{p['command']}` | {p['device']} | {p['versions']} "
                     f"| {p.get('load', '')} |")
    lines += ["", "## Clean top-1 (%)", "", "| seed | " + " | ".join(name(s, m) for s, m in cols) + " |",
              "|---:|" + "---:|" * len(cols)]
    for seed in seeds:
        lines.append(f"| {seed} | " + " | ".join(f"{cell[(s, m, seed)]:.1f}" if (s, m, seed) in cell else "not run"
                                                 for s, m in cols) + " |")
    means = []
    for s, m in cols:
        v = [cell[(s, m, seed)] for seed in seeds if (s, m, seed) in cell]
        means.append(f"{sum(v) / len(v):.1f} ({len(v)})" if v else "")
    lines.append("| mean (seeds) | " + " | ".join(means) + " |")
    lines += ["", "## Jobs", "", "| source | margin | seed | model spec | n | top-1 | time | pass |",
              "|---|---:|---:|---|---:|---:|---:|---|"]
    for j in jobs:
        t = "reused" if j["seconds"] is None else f"{j['seconds']:.0f} s"
        lines.append(f"| {j['source']} | {'' if j['margin'] is None else j['margin']} | {j['seed']} | `{j['spec']}` | "
                     f"{j['n']} | {j['top1']:.1f} | {t} | {j['pass_']} |")
    D.write_page(out, lines)


if __name__ == "__main__":
    main()
