"""One ImageNet-S variant as a picklable callable: path -> uint8 CHW tensor at the model's input
geometry. DataLoader workers pickle it; backends are set up lazily in whichever process runs it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustart.imagenet_s import decoders as D
from robustart.imagenet_s import resize as R


def geometry_of(entry) -> tuple[int, float, str]:
    """(input size, crop_pct, interpolation) of a zoo entry; square inputs only."""
    cfg = entry.data_config
    _, h, w = cfg["input_size"]
    if h != w:
        raise D.DecoderError(f"model {entry.name!r}: ImageNet-S variants need a square input size, got {h}x{w}.")
    return int(h), float(cfg["crop_pct"]), cfg["interpolation"]


@dataclass(frozen=True)
class Pipeline:
    decoder: str
    resizer: str
    size: int = 224
    crop_pct: float = 0.875
    geometry: str = "eval"

    def __post_init__(self):
        D.check_name(self.decoder)
        R.check_name(self.resizer)
        if self.geometry not in R.GEOMETRIES:
            raise D.DecoderError(f"unknown geometry {self.geometry!r}; choose from {', '.join(R.GEOMETRIES)}.")

    @classmethod
    def for_entry(cls, entry, decoder: str, resizer: str, geometry: str = "eval") -> "Pipeline":
        size, crop_pct, interp = geometry_of(entry)
        if resizer == "model":
            resizer = R.model_resizer(interp)
        return cls(decoder, resizer, size, crop_pct, geometry)

    @property
    def label(self) -> str:
        return f"{self.decoder}/{self.resizer}" + ("" if self.geometry == "eval" else f"/{self.geometry}")

    def unavailable(self) -> str | None:
        why = D.unavailable(self.decoder)
        if why is None and self.resizer.startswith("pil-simd-"):
            why = D.unavailable("pil-simd")
            why = why and why.replace("decoder 'pil-simd'", f"resizer {self.resizer!r}")
        if why is None and self.resizer.startswith("opencv-"):
            why = D.unavailable("opencv")
            why = why and why.replace("decoder 'opencv'", f"resizer {self.resizer!r}")
        return why

    def array(self, data: bytes) -> np.ndarray:
        """JPEG bytes -> (size, size, 3) uint8."""
        img = D.decode(self.decoder, data)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"decoder {self.decoder!r} returned {img.dtype} {img.shape}, not uint8 RGB")
        return np.ascontiguousarray(R.apply_geometry(img, self.resizer, self.size, self.crop_pct, self.geometry))

    def __call__(self, path):
        import torch

        data = Path(path).read_bytes()
        return torch.from_numpy(self.array(data)).permute(2, 0, 1).contiguous()
