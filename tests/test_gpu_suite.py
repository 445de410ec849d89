"""The GPU suite (benchmarks/gpu_suite.sh): its dry run on the CPU writes every result file, a
failing part makes it fail, and what it carries to a GPU machine fits (no internet needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_suite as G  # noqa: E402

EXPECTED = [
    "attack_throughput_cpu.md", "attack_throughput_cpu.json",
    "corruption_throughput_cpu.md", "corruption_throughput_cpu.csv",
    "lowbit_kernels_cpu.md", "lowbit_kernels_cpu.json",
    "clean_eval_throughput_cpu.md", "clean_eval_throughput_cpu.json",
    "decode_resize_throughput_cpu.md", "decode_resize_throughput_cpu.csv",
    "precision_noise_cpu.md", "precision_noise_cpu.json",
]


def _env(sample):
    return dict(os.environ, PYTHON=sys.executable, ROBUSTART_IMAGENET_SAMPLE=str(sample))


def test_dry_run_writes_every_result_file_marked(imagenet_sample, tmp_path):
    res = tmp_path / "results"
    p = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_suite.sh"), "--dry-run", "--results", str(res),
                        "--data", str(imagenet_sample)], env=_env(imagenet_sample), capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "every result file was written" in p.stdout
    for name in EXPECTED:
        f = res / name
        assert f.is_file(), name
        if f.suffix == ".md":
            assert f.read_text().startswith(G.DRY_BANNER), name
        elif f.suffix == ".json":
            assert json.loads(f.read_text())["dry_run"] is True, name
        else:
            assert pd.read_csv(f)["dry_run"].all(), name
    summary = (res / "gpu_suite_summary.md").read_text()
    assert "DRY RUN" in summary and summary.count("| ok |") == 6
    # the figures are read back from the files: the corruption part names its ratio
    assert "vs reference: overall" in summary


def test_a_failing_part_fails_the_suite(tmp_path):
    empty = tmp_path / "no-images"
    empty.mkdir()
    rc = G.main(["--dry-run", "--parts", "clean", "--results", str(tmp_path / "res"), "--data", str(empty)])
    assert rc == 1
    assert "missing" in (tmp_path / "res" / "gpu_suite_summary.md").read_text()


def test_without_a_gpu_the_real_run_says_what_to_do(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_suite.py"), "--results", str(tmp_path)],
                       capture_output=True, text=True, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().startswith("error:") and "--dry-run" in p.stderr


def test_wheel_fetch_script_and_carry_size(imagenet_sample):
    """gpu_fetch.sh asks for each pinned package as a CPython 3.12 manylinux x86_64 wheel, the pins
    are the versions tested here, and the working tree + wheels + JPEGs stay under the limits
    (wheels bounded by their installed size when not downloaded)."""
    p = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_fetch.sh"), "--dry-run"], env=_env(imagenet_sample),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    downloads = [line for line in p.stdout.splitlines() if " pip download " in line]
    assert len(downloads) == len(G.CARRIED_WHEELS)
    for (name, pinned), line in zip(G.CARRIED_WHEELS.items(), downloads):
        assert line.endswith(f" {name}=={pinned}")
        for flag in ("--python-version 3.12", "--implementation cp", "--platform manylinux_2_17_x86_64", "--no-deps"):
            assert flag in line
        assert version(name) == pinned, f"{name}: the GPU machine would run {pinned}, the tests run {version(name)}"
        __import__(G.CARRIED_MODULES[name])
    r = G.carry_report(str(imagenet_sample))
    assert r["image_count"] == G.CARRIED_IMAGES
    assert r["wheels"] < G.WHEELS_LIMIT and r["total"] < G.CARRY_LIMIT, r
    assert r["ok"]
    # the folders the suite carries are ignored by git, so they travel only when named in `carry`
    ignored = subprocess.run(["git", "check-ignore", ".gpu-wheels/x.whl", ".gpu-images/x.JPEG"], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    assert ignored == [".gpu-wheels/x.whl", ".gpu-images/x.JPEG"]
