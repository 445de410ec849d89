"""Data-free calibration vs real images: efficientnet_lite0 on the 1000-image ImageNet sample.

Each quantized form (W8A8, W6A6, W4A8, W4A4 plain, W4A4 MSE + BRECQ/AdaRound reconstruction) is
calibrated on four sources of `calib` images: real (drawn from the sample; 'held-out' top-1
excludes them), DSG, ZeroQ-style and Gaussian noise images (robustart.quant.dsg). Robustness of
each (form, source) on the first `--robust-limit` sample images: PGD at the small budget and one
corruption at severity 3. Every number comes from a job in the results store, so a rerun reuses
finished jobs; rows run in priority order and the table is rewritten after each. Measured jobs
are kept in a JSON file beside the table (every pass adds to it, one lock for passes side by side),
and the table is written from it.

  OMP_NUM_THREADS=2 ROBUSTART_IMAGENET_SAMPLE=... nice -n 10 python benchmarks/dfq_accuracy.py \
      [--store DIR] [--calib 32] [--limit 200] [--robust-limit 50] [--rows N] [--skip-done] \
      [--forms w4a4+recon,...] [--sources real,dsg,...] [--noises clean,pgd,corruption] \
      [--out benchmarks/results/dfq_accuracy.md]

Generated images are made on first use (cached in $ROBUSTART_HOME/calib/); `robustart quant
calib-gen efficientnet_lite0 --method dsg --n 16 --iters 60` makes the ones this table uses ahead
(and writes a grid PNG).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
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
GEN_ITERS = 60  # optimizer steps of the generators, the forms' default; written into every spec, so a new
# default does not turn the recorded jobs into other ones
PGD = "pgd:budget=small,steps=5"
CORRUPTION = "corruption:gaussian_noise:3"


def spec_of(form: str, source: str, calib: int, gen_iters: int = GEN_ITERS) -> str:
    sep = "," if ":" in form else ":"
    extra = f"calib={calib}" + ("" if source == "real" else f",calib_data={source}")
    if source in ("dsg", "zeroq"):
        extra += f",gen_iters={gen_iters}"
    return f"{MODEL}@{form}{sep}{extra}"


def full_plan(calib: int, robust: bool = True, gen_iters: int = GEN_ITERS) -> list[tuple[str, str, str, str]]:
    """Every (noise, form label, source, model spec) of the table, in priority order: fp, then per
    form the four sources' clean jobs; the two forms the question is about (W8A8, W4A4
    reconstructed) and their robustness before the rest."""
    plan = [("clean", "fp", "-", MODEL)]
    noises = [PGD, CORRUPTION] if robust else []
    for label, form in FORMS[:3]:
        plan += [("clean", label, s, spec_of(form, s, calib, gen_iters)) for s in RUN_ORDER]
    for noise in noises:
        plan.append((noise, "fp", "-", MODEL))
        for label, form in FORMS[:2]:
            plan += [(noise, label, s, spec_of(form, s, calib, gen_iters)) for s in RUN_ORDER]
    for label, form in FORMS[3:]:
        plan += [("clean", label, s, spec_of(form, s, calib, gen_iters)) for s in RUN_ORDER]
    for noise in noises:
        for label, form in FORMS[2:]:
            plan += [(noise, label, s, spec_of(form, s, calib, gen_iters)) for s in RUN_ORDER]
    return plan


def _pick(plan, forms, sources, noises):
    """The jobs of the plan selected by --forms/--sources/--noises (comma lists; None: all)."""
    def norm(x):
        return x.replace(" ", "")

    def keep(value, wanted):
        return wanted is None or norm(value) in {norm(w) for w in wanted.split(",")}

    short = {"clean": "clean", PGD: "pgd", CORRUPTION: "corruption"}
    return [j for j in plan if keep(j[1], forms) and keep(j[2], sources) and keep(short[j[0]], noises)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default=str(Path.home() / ".robustart" / "bench-dfq"))
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--gen-iters", type=int, default=GEN_ITERS, help="generator steps of dsg / zeroq images")
    ap.add_argument("--limit", type=int, default=200, help="clean evaluation images (first N by id; 0: all 1000)")
    ap.add_argument("--robust-limit", type=int, default=50, help="images for PGD and the corruption")
    ap.add_argument("--rows", type=int, default=None, help="run only the first N selected jobs")
    ap.add_argument("--forms", default=None, help="comma list of form labels: fp,w8a8,w4a4,w4a4+recon,w6a6,w4a8")
    ap.add_argument("--sources", default=None, help="comma list of -,real,dsg,zeroq,noise ('-': fp)")
    ap.add_argument("--noises", default=None, help="comma list of clean,pgd,corruption")
    ap.add_argument("--skip-done", action="store_true", help="leave out jobs the results file already holds")
    ap.add_argument("--no-robust", action="store_true")
    ap.add_argument("--wait-gen", type=float, default=0, help="minutes to wait for generated images being made elsewhere")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dfq_accuracy.md"))
    ap.add_argument("--json", default=None, help="every measured job, across passes (default: --out with .json)")
    args = ap.parse_args()
    args.json = args.json or str(Path(args.out).with_suffix(".json"))

    from robustart.engine.evaluate import evaluate

    data = os.environ.get("ROBUSTART_IMAGENET_SAMPLE")
    if not data:
        sys.exit("set ROBUSTART_IMAGENET_SAMPLE to the 1000-image ImageNet sample folder")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    plan = full_plan(args.calib, robust=not args.no_robust, gen_iters=args.gen_iters)
    todo = _pick(plan, args.forms, args.sources, args.noises)
    settings, state = _settings(args), _load(args.json)
    if state.get("settings", settings) != settings:
        sys.exit(f"{args.json} holds jobs run with {state['settings']}, not {settings}: pass another --out (and --json)")
    if args.skip_done:
        done = {_key(j) for j in state["jobs"]}
        todo = [j for j in todo if (j[0], j[1], j[2]) not in done]
    todo = todo if args.rows is None else todo[: args.rows]
    this_pass = _pass_record(args)
    print(f"{len(todo)} job(s) to run; results in {args.json} and {args.out}", flush=True)
    for noise, label, source, spec in todo:
        if source in ("dsg", "zeroq"):
            _wait_for_images(spec, args.wait_gen)
        t0 = time.perf_counter()
        limit = (args.limit or None) if noise == "clean" else args.robust_limit
        res = evaluate(spec, data, noise=noise, limit=limit, batch_size=args.batch_size, store=args.store,
                       progress=False)
        rec = res.records
        job = dict(noise=noise, label=label, source=source, spec=spec, key=res.key, n=len(rec), top1=_pct(rec),
                   held=_held_out(rec, spec, data),
                   seconds=None if res.reused else round(time.perf_counter() - t0),
                   pass_=this_pass["id"])
        print(f"{noise:32s} {label:12s} {source:6s} top1 {job['top1']:6.2f} held {job['held']:6.2f} "
              f"({'reused' if res.reused else '%ds' % job['seconds']})", flush=True)
        _record(args, plan, job, this_pass, reused=res.reused)
    with _locked(args.json):
        _write(args, plan, _load(args.json))
    print(f"wrote {args.out}")


def _settings(args) -> dict:
    """What every job of one results file shares (the jobs are keyed by noise, form and source only)."""
    return dict(model=MODEL, calib=args.calib, limit=args.limit, robust_limit=args.robust_limit, gen_iters=args.gen_iters)


def _key(job) -> tuple[str, str, str]:
    return (job["noise"], job["label"], job["source"])


def _pass_record(args) -> dict:
    cmd = (f"OMP_NUM_THREADS={torch.get_num_threads()} nice -n 10 python benchmarks/dfq_accuracy.py "
           f"--calib {args.calib} --limit {args.limit} --robust-limit {args.robust_limit}")
    if args.gen_iters != GEN_ITERS:
        cmd += f" --gen-iters {args.gen_iters}"
    if Path(args.out).name != "dfq_accuracy.md":
        cmd += f" --out benchmarks/results/{Path(args.out).name}"
    for flag in ("forms", "sources", "noises"):
        if getattr(args, flag):
            cmd += f" --{flag} {getattr(args, flag)}"
    return machine_record(cmd)


def machine_record(cmd: str) -> dict:
    """One pass: its start, command, machine and versions."""
    from robustart.engine.env import cpu_model, versions

    import robustart

    v = versions()
    return dict(id=datetime.now(timezone.utc).isoformat(timespec="seconds"), command=cmd,
                device=f"{cpu_model()}, {torch.get_num_threads()} thread(s)",
                versions=f"robustart {robustart.__version__}, torch {v.get('torch')}, timm {v.get('timm')}")


def keeps_recorded(old: dict | None, key: str, reused: bool) -> bool:
    """A job reused from the store keeps the row (pass and time) that measured it; the store key, not
    the spec, says it is the same job (a spec means another job when a default changes)."""
    return reused and old is not None and old.get("key") == key


def ended(this_pass: dict) -> dict:
    """The pass record as of now: its end time and the load average."""
    load = os.getloadavg()
    return dict(this_pass, end=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                load=f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")


def write_page(out: Path, lines: list[str]) -> None:
    """Write a results page, keeping the hand-written "## Reading" section of the one it replaces."""
    from robustart.results.store import atomic_write_bytes

    old = out.read_text() if out.is_file() else ""
    reading = old[old.index("## Reading"):].rstrip("\n").split("\n") if "## Reading" in old else []
    atomic_write_bytes(out, ("\n".join(lines + ([""] + reading if reading else [])) + "\n").encode())


def _load(path) -> dict:
    p = Path(path)
    return json.loads(p.read_text()) if p.is_file() else {"passes": [], "jobs": []}


@contextlib.contextmanager
def _locked(path):
    """Passes may run side by side (e.g. one on the reconstructed forms, one on the rest): the
    results file is read, updated and rewritten under one lock."""
    with open(str(path) + ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _record(args, plan, job, this_pass, reused: bool) -> None:
    from robustart.results.store import atomic_write_json

    with _locked(args.json):
        state = _load(args.json)
        jobs = {_key(j): j for j in state["jobs"]}
        if not keeps_recorded(jobs.get(_key(job)), job["key"], reused):
            jobs[_key(job)] = job
        rec = ended(this_pass)
        state["settings"] = _settings(args)
        state["passes"] = [p for p in state["passes"] if p["id"] != rec["id"]] + [rec]
        order = {(n, l, s): i for i, (n, l, s, _) in enumerate(plan)}
        state["jobs"] = sorted(jobs.values(), key=lambda j: order.get(_key(j), len(order)))
        atomic_write_json(Path(args.json), state)
        _write(args, plan, state)


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


def _write(args, plan, state) -> None:
    results = {_key(j): j for j in state["jobs"]}
    passes = {p["id"]: p for p in state["passes"]}
    lines = [
        f"# Data-free vs real calibration: {MODEL} on the ImageNet sample (first {args.limit or 1000} images)",
        "",
        "Every number below comes from one job of `benchmarks/dfq_accuracy.py` (the job table at the end "
        f"names its pass); passes add to `{Path(args.json).name}` beside this file, and this page is written from it.",
        "",
        f"- every form calibrates on {args.calib} images (`calib={args.calib}`, seed 0): *real* = drawn from the "
        f"sample itself; *dsg*, *zeroq*, *noise* = generated from the model (`calib_data=...`, {args.gen_iters} Adam steps "
        "on one batch of 16 at lr 0.1, see robustart/quant/dsg.py). Clean top-1 over the first "
        f"{args.limit or 1000} images (by id); for *real*, over those not used for calibration (the number shown; the "
        "other sources never see a sample image).",
        f"- robustness on the first {args.robust_limit} images (sorted ids): `{PGD}` (Linf eps 0.5/255, 5 steps) "
        f"and `{CORRUPTION}`; top-1 under the noise (for *real*, again without its calibration images).",
        "- weights per output channel, symmetric; activations per tensor, asymmetric; first conv and classifier "
        "at 8 bits; backend fake; reconstruction: MSE ranges + 50 AdaRound iterations per block.",
        "",
        "## Passes",
        "",
        "| pass (start, UTC) | end | command | device | versions | load average at end |",
        "|---|---|---|---|---|---|",
    ]
    for p in passes.values():
        lines.append(f"| {p['id']} | {p.get('end', '')} | `{p['command']}` | {p['device']}, shared with other work "
                     f"| {p['versions']} | {p.get('load', '')} |")
    lines += ["", "## Clean top-1 (%)", "", "| form | real (held-out) | dsg | zeroq | noise |", "|---|---:|---:|---:|---:|"]
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
    lines += ["", "## Jobs", "", "| noise | form | source | model spec | n | top-1 all | held-out | time | pass |",
              "|---|---|---|---|---:|---:|---:|---:|---|"]
    for r in results.values():
        t = "reused" if r["seconds"] is None else f"{r['seconds']:.0f} s"
        lines.append(f"| {r['noise']} | {r['label']} | {r['source']} | `{r['spec']}` | {r['n']} | {r['top1']:.1f} | "
                     f"{r['held']:.1f} | {t} | {r['pass_']} |")
    missing = [(n, l, s) for n, l, s, _ in plan if (n, l, s) not in results]
    if missing:
        lines += ["", f"Not run yet ({len(missing)} jobs of the full plan; a pass runs the ones its --forms, --sources "
                  "and --noises select): "
                  + ", ".join(f"{l}/{s} {n}" for n, l, s in missing) + "."]
    write_page(Path(args.out), lines)


if __name__ == "__main__":
    main()
