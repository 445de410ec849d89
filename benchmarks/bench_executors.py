"""Executors of `robustart bench`: the wall time of one plan with each executor, and each
executor's cost per unit of work (job, shard) against the compute of a 256-image shard.

    nice -n 10 python benchmarks/bench_executors.py [--data DIR] [--images 96] [--shard 32]
        [--units 24] [--out benchmarks/results]

1. Plan wall time: efficientnet_lite0 x (clean, corruption:gaussian_noise:1,
   pgd:eps=1/255,steps=1) on --images sample images in shards of --shard, from an empty store,
   with: local in this process; local --workers 1 and 2; ray (a local cluster of this machine's
   cores, one CPU per task); slurm through submitit's local executor (2 workers).
2. Per-unit overhead: the same --units images of one clean job, batch size 2, run as one unit
   (shard = all) and as --units units of 1 image... of 2 images each (shard 2): the extra wall
   time divided by the extra units is what one unit costs an executor beyond its compute (claims,
   meta.json updates, decoding-worker start, Ray task or worker round trip). It is compared with
   the compute of one 256-image clean shard measured in a warm process (model built).
Writes bench_executors_<cpu|gpu>.md to --out.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local cluster for this run only


def plan_jobs(data, store, noises, n, shard, batch):
    from robustart.engine.plan import plan

    return plan("efficientnet_lite0", data, noise=list(noises), limit=n, shard_size=shard, store=store,
                progress=False, workers=0, batch_size=batch).jobs


def timed(jobs, executor, workers=None, options=None) -> float:
    from robustart.bench.run import run_plan

    t = time.perf_counter()
    out = run_plan(jobs, executor=executor, workers=workers, progress=False, options=options or {})
    dt = time.perf_counter() - t
    if out.failed or len(out.complete) != len(jobs):
        raise SystemExit(f"{executor}: the plan did not complete: {out.failed}")
    return dt


def shard_compute(data, tmp, n=256) -> float:
    """Seconds to compute one n-image clean shard in a warm process (the model built before)."""
    from robustart.engine.execute import Resources, execute

    res = Resources(progress=False)
    (job,) = plan_jobs(data, tmp / "warm", ["clean"], 2 * n, n, 32)
    execute(job, [0], progress=False, resources=res)  # builds the model, opens the data
    t = time.perf_counter()
    execute(job, [1], progress=False, resources=res)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("ROBUSTART_IMAGENET_SAMPLE", "../shared/data/imagenet-sample"))
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--shard", type=int, default=32)
    ap.add_argument("--units", type=int, default=24, help="images of the per-unit overhead job (units of 2)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)

    import ray
    import submitit
    import torch

    import robustart

    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-executors-"))
    rows, over = [], []
    try:
        cores = os.cpu_count() or 1
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
        noises = ["clean", "corruption:gaussian_noise:1", "pgd:eps=1/255,steps=1"]
        runs = [("local, in this process", "local", None, {}), ("local, 1 worker", "local", 1, {}),
                ("local, 2 workers", "local", 2, {}), (f"ray, local cluster ({cores} CPUs, 1 per task)", "ray", None, {}),
                ("slurm (submitit local), 2 workers", "slurm", 2, {"cluster": "local", "folder": str(tmp / "si")})]
        for i, (label, ex, w, opt) in enumerate(runs):
            jobs = plan_jobs(args.data, tmp / f"plan-{i}", noises, args.images, args.shard, 16)
            dt = timed(jobs, ex, w, opt)
            rows.append((label, dt, len(jobs) * args.images / dt))
            print(f"plan {label}: {dt:.1f} s", file=sys.stderr)

        t256 = shard_compute(args.data, tmp)
        print(f"256-image clean shard: {t256:.2f} s", file=sys.stderr)
        k = args.units // 2
        for i, (label, ex, w, opt) in enumerate(runs):
            if w == 2:
                w = 1  # one worker: units one after another, so the difference is overhead, not parallelism
                label = label.replace("2 workers", "1 worker")
                if ex == "local":
                    continue  # the row above
            if ex == "ray":
                opt = {"cpus_per_task": cores}  # one task at a time on this machine's cores
                # a Ray worker process outlives a run and keeps its built model: warm it first, so
                # neither measured run pays the worker's start and model build
                timed(plan_jobs(args.data, tmp / "ray-warm", ["clean"], 2, 2, 2), ex, w, opt)
            one = timed(plan_jobs(args.data, tmp / f"one-{i}", ["clean"], args.units, args.units, 2), ex, w, opt)
            many = timed(plan_jobs(args.data, tmp / f"many-{i}", ["clean"], args.units, 2, 2), ex, w, opt)
            per = (many - one) / (k - 1)
            over.append((label, one, many, per, per / t256))
            print(f"overhead {label}: {per:.3f} s/unit", file=sys.stderr)
    finally:
        try:
            ray.shutdown()
        except Exception:
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    out = [
        "# Executors: plan wall time and per-unit overhead (CPU)",
        "",
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- cpu: {cpu} ({os.cpu_count()} logical cores); no GPU",
        f"- robustart {robustart.__version__}, torch {torch.__version__}, ray {ray.__version__}, "
        f"submitit {submitit.__version__}, python {platform.python_version()}",
        f"- load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; after: "
        f"{', '.join(f'{x:.2f}' for x in load_after)} (`uptime` after: {uptime})",
        "- the machine is shared with other users' work: timings are noisy and slower than on an idle machine",
        f"- command: nice -n 10 python benchmarks/bench_executors.py --images {args.images} --shard {args.shard} "
        f"--units {args.units}",
        "",
        f"## One plan: efficientnet_lite0 x (clean, gaussian_noise 1, PGD eps 1/255 1 step), {args.images} images, "
        f"shards of {args.shard} ({3 * ((args.images + args.shard - 1) // args.shard)} units), empty store",
        "",
        "| executor | wall (s) | records/s |",
        "|---|---|---|",
    ]
    out += [f"| {label} | {dt:.1f} | {r:.2f} |" for label, dt, r in rows]
    out += [
        "",
        "Wall time includes everything a user waits for: worker start (a Python process with torch, or a "
        "Ray worker), model build in each worker, and a suite's clean pass once per process that runs its "
        "jobs (recomputed by each worker otherwise).",
        "",
        f"## Per-unit overhead: {args.units} images of one clean job, batch 2, as 1 unit and as {k} units of 2",
        "",
        f"Compute of one 256-image clean shard in a warm process: {t256:.2f} s.",
        "",
        f"| executor | 1 unit (s) | {k} units (s) | overhead per unit (s) | vs a 256-image shard |",
        "|---|---|---|---|---|",
    ]
    out += [f"| {label} | {one:.1f} | {many:.1f} | {per:.3f} | {frac * 100:.1f}% |"
            for label, one, many, per, frac in over]
    out += ["", "Target: under 5% of a 256-image shard's compute per unit.", ""]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    dev = "gpu" if torch.cuda.is_available() else "cpu"
    path = Path(args.out) / f"bench_executors_{dev}.md"
    path.write_text("\n".join(out))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
