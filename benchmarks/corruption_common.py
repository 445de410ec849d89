"""Shared helpers of the corruption benchmarks: environment header, real images."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from robustart.engine.env import cpu_model




def environment(device: str = "cpu") -> dict:
    import os

    import cv2
    import numpy
    import scipy
    import skimage
    import torch
    import torchvision
    from importlib.metadata import version

    env = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": f"{cpu_model()} ({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()})",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "imagecorruptions-imaug": version("imagecorruptions-imaug"),
        "opencv": cv2.__version__,
        "scipy": scipy.__version__,
        "scikit-image": skimage.__version__,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def header(env: dict) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in env.items())


def load_images(data: str | Path, limit: int, transform):
    """The first `limit` samples of a dataset (by id) at the model's input geometry, uint8."""
    import torch
    from PIL import Image

    from robustart.data.sources import open_source

    samples = open_source(str(data)).take(limit)
    xs = []
    for s in samples:
        with Image.open(s.path) as im:
            xs.append(transform(im.convert("RGB")))
    return torch.stack(xs), [s.id for s in samples], torch.tensor([s.label for s in samples])
