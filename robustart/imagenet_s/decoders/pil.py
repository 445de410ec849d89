"""Pillow, the reference decoder: the same conversions as the engine's `load_rgb` for JPEG modes."""

from __future__ import annotations

import io

import numpy as np


class Decoder:
    def __init__(self, name: str):
        self.name = name

    def unavailable(self) -> str | None:
        return None

    def version(self) -> str:
        import PIL

        return f"Pillow {PIL.__version__}"

    def decode(self, data: bytes) -> np.ndarray:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im).copy()
