"""OpenCV's cv2.imdecode, straight to RGB, EXIF orientation ignored (Pillow ignores it too)."""

from __future__ import annotations

import numpy as np

from robustart.errors import need


class Decoder:
    def __init__(self, name: str):
        self.name = name

    def unavailable(self) -> str | None:
        need("cv2", "decoder 'opencv'")

        return None

    def version(self) -> str:
        import cv2

        return f"OpenCV {cv2.__version__}"

    def decode(self, data: bytes) -> np.ndarray:
        import cv2

        flags = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        if img is None:
            raise ValueError("cv2.imdecode could not decode the file")
        return np.ascontiguousarray(img)
