"""`robustart results list` and `robustart report` over a study-size store: wall time and peak
memory (max RSS from /usr/bin/time -v) of each command, run as a user runs it.

    python benchmarks/store_scale.py STORE [--make --jobs 7500 --n 5000 --shard-size 1000]
                                           [--code DIR] [--label NAME] [--skip-report]

--make writes the store first (benchmarks/make_study_store.py; not committed data). --code runs
another checkout's robustart (e.g. `git archive <commit> robustart | tar -x -C DIR`) to
compare before / after. Prints one JSON line per measurement; the committed numbers are in
benchmarks/results/store_scale_cpu.md. Run it with `nice -n 10` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict) -> dict:
    """Wall seconds and max RSS (MB) of one command (with `report --json`, its own split)."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    wall = time.perf_counter() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    out = {"seconds": round(wall, 2), "max_rss_mb": round(int(rss.group(1)) / 1024, 1) if rss else None}
    if cmd[-1] == "--json" and "report" in cmd:
        out["split"] = {k: round(v, 1) for k, v in json.loads(p.stdout).get("seconds", {}).items()}
    return out


def store_size(root: Path) -> dict:
    jobs = files = size = 0
    for d in (root / "jobs").iterdir():
        jobs += 1
        for p in d.rglob("*"):
            if p.is_file():
                files += 1
                size += p.stat().st_size
    return {"jobs": jobs, "files": files, "gb": round(size / 1e9, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", type=Path)
    ap.add_argument("--make", action="store_true", help="write the store first")
    ap.add_argument("--jobs", type=int, default=7500)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--code", type=Path, default=ROOT, help="the robustart checkout to measure (default: this one)")
    ap.add_argument("--label", default="this checkout")
    ap.add_argument("--skip-report", action="store_true")
    a = ap.parse_args()

    if a.make:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from make_study_store import make

        if a.store.exists():
            shutil.rmtree(a.store)
        print(json.dumps({"made": make(a.store, a.jobs, a.n, a.shard_size)}), flush=True)
    env = {**os.environ, "PYTHONPATH": str(a.code), "COLUMNS": "200"}
    robustart = [sys.executable, "-m", "robustart.cli"] if (a.code / "robustart" / "__main__.py").exists() else \
        [sys.executable, "-c", "from robustart.cli import main; main()"]
    info = {"code": a.label, "store": str(a.store), **store_size(a.store)}
    for fmt in ("json", "table"):
        r = timed([*robustart, "results", "list", "--store", str(a.store), "--format", fmt], env)
        print(json.dumps({**info, "command": f"results list --format {fmt}", **r}), flush=True)
    if not a.skip_report:
        with tempfile.TemporaryDirectory() as out:
            r = timed([*robustart, "report", "--store", str(a.store), "--out", out, "--json"], env)
        print(json.dumps({**info, "command": "report", **r}), flush=True)


if __name__ == "__main__":
    main()
