"""The environment a job ran in, recorded in its metadata."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

_PACKAGES = ("torch", "torchvision", "timm", "numpy", "pillow", "pandas", "pyarrow", "huggingface_hub", "safetensors")


def versions() -> dict:
    import robustart

    out = {"python": platform.python_version(), "robustart": robustart.__version__}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def git_info() -> dict | None:
    """Commit of the robustart source tree if it is a git checkout (editable installs)."""
    here = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), for job metadata and benchmark tables."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device) -> dict:
    import torch

    device = torch.device(device)
    info = {"type": device.type, "host": platform.node(), "platform": platform.platform()}
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        info["name"] = torch.cuda.get_device_name(idx)
        info["cuda"] = torch.version.cuda
    else:
        info["name"] = cpu_model()
        info["threads"] = torch.get_num_threads()
    return info


def resolve_device(device: str | None):
    import torch

    from robustart.errors import RobustartError

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError):
        raise RobustartError(f"--device {device!r} is not a device; use cpu, cuda, cuda:N or auto.") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise RobustartError(f"--device {device}: no CUDA device is available here; use --device cpu.")
    if d.type not in ("cpu", "cuda"):
        raise RobustartError(f"--device {device}: only cpu and cuda are supported; use cpu, cuda, cuda:N or auto.")
    return d
