"""Resize backends and geometries. A resizer maps an RGB uint8 array (H, W, 3) to (height, width)
given as (W, H), as PIL does; the geometry decides that size and the center crop.

Geometries:
  eval     the model's own eval transform (timm, torchvision): shorter side to
           floor(size / crop_pct), longer side int(scaled), center crop size x size
  square   ImageNet-S's: both sides to floor(size / crop_pct) (aspect ratio not kept), center crop
"""

from __future__ import annotations

import math

import numpy as np

from robustart.errors import need
from robustart.imagenet_s.decoders import DecoderError
from robustart.registry import Registry

_PIL_FILTERS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
_CV2_FLAGS = {"nearest": "INTER_NEAREST", "linear": "INTER_LINEAR", "area": "INTER_AREA", "cubic": "INTER_CUBIC",
              "lanczos4": "INTER_LANCZOS4"}


class Resizer:
    """A resize backend: `resize(img, (W, H))` maps an RGB uint8 array (H, W, 3) to (H, W, 3).
    `library` names the decoder whose library does the work (its availability and version are
    the resizer's); `sweep` says whether the one-factor sweep includes it. A new resizer is one
    subclass and one `RESIZERS.register(...)` line."""

    library = ""  # "" : torch

    def __init__(self, name: str, help: str, sweep: bool = True):
        self.name, self.help, self.sweep = name, help, sweep

    def resize(self, img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    def unavailable(self) -> str | None:
        if not self.library:
            return None
        from robustart.imagenet_s import decoders as D

        why = D.unavailable(self.library)
        return why and why.replace(f"decoder {self.library!r}", f"resizer {self.name!r}")

    def version(self) -> str:
        if not self.library:
            import torch

            return f"torch {torch.__version__}"
        from robustart.imagenet_s import decoders as D

        return D.get(self.library).version()


class PilResizer(Resizer):
    library = "pil"

    def __init__(self, flt: str):
        super().__init__(f"pil-{flt}", f"Pillow Image.resize, {flt.upper()} filter")
        self.filter = flt

    def resize(self, img, size):
        from PIL import Image

        return np.asarray(Image.fromarray(img).resize(size, getattr(Image.Resampling, self.filter.upper())))


class PilSimdResizer(Resizer):
    library = "pil-simd"

    def __init__(self, flt: str):
        # Pillow-SIMD's resizers add little over its bilinear/bicubic, which is what pipelines use.
        super().__init__(f"pil-simd-{flt}", f"Pillow-SIMD Image.resize, {flt.upper()} filter (worker process)",
                         sweep=flt in ("bilinear", "bicubic"))
        self.filter = flt

    def resize(self, img, size):
        from robustart.imagenet_s.decoders import pil_simd

        return pil_simd.resize(img, size, self.filter)


class OpenCvResizer(Resizer):
    library = "opencv"

    def __init__(self, flag: str):
        super().__init__(f"opencv-{flag}", f"OpenCV cv2.resize, {_CV2_FLAGS[flag]}")
        self.flag = flag

    def resize(self, img, size):
        cv2 = need("cv2", f"resizer {self.name!r}")

        return cv2.resize(img, size, interpolation=getattr(cv2, _CV2_FLAGS[self.flag]))


class TorchResizer(Resizer):
    def __init__(self, mode: str, antialias: bool):
        aa = "antialias=True" if antialias else "no antialias"
        super().__init__(f"torch-{mode}" + ("-aa" if antialias else ""),
                         f"torch.nn.functional.interpolate {mode}, {aa} (float, rounded)")
        self.mode, self.antialias = mode, antialias

    def resize(self, img, size):
        import torch
        import torch.nn.functional as F

        w, h = size
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
        out = F.interpolate(t, size=(h, w), mode=self.mode, align_corners=False, antialias=self.antialias)
        return out[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


RESIZERS = Registry("resizer", error=DecoderError,
                    message="unknown resizer {name!r}.{hint} Resizers: {names} "
                            "(or `model`: the model's own, Pillow with its interpolation).")
for _f in _PIL_FILTERS:
    RESIZERS.register(PilResizer(_f))
for _f in _PIL_FILTERS:
    RESIZERS.register(PilSimdResizer(_f))
for _f in _CV2_FLAGS:
    RESIZERS.register(OpenCvResizer(_f))
for _f in ("bilinear", "bicubic"):
    RESIZERS.register(TorchResizer(_f, False))
    RESIZERS.register(TorchResizer(_f, True))

GEOMETRIES = {
    "eval": "the model's eval transform: shorter side to size/crop_pct, center crop (reference)",
    "square": "ImageNet-S: both sides to size/crop_pct, aspect ratio not kept, center crop",
}

# timm interpolation names -> the Pillow resizer the model's own eval transform uses
MODEL_RESIZERS = {"bicubic": "pil-bicubic", "bilinear": "pil-bilinear", "nearest": "pil-nearest",
                  "lanczos": "pil-lanczos", "box": "pil-box", "hamming": "pil-hamming"}


def check_name(name: str) -> str:
    RESIZERS.get(name)
    return name


def model_resizer(interpolation: str) -> str:
    try:
        return MODEL_RESIZERS[interpolation]
    except KeyError:
        raise DecoderError(f"the model's eval interpolation {interpolation!r} has no Pillow resizer here; "
                           f"known: {', '.join(MODEL_RESIZERS)}.") from None


def resize(img: np.ndarray, size: tuple[int, int], name: str) -> np.ndarray:
    """`img` (H, W, 3) uint8 -> (size[1], size[0], 3) uint8 with backend `name`."""
    return RESIZERS.get(name).resize(img, size)


def resized_size(width: int, height: int, size: int, crop_pct: float, geometry: str) -> tuple[int, int]:
    """(W, H) after the resize step, before the crop, computed as torchvision/timm do."""
    s = math.floor(size / crop_pct)
    if geometry == "square":
        return s, s
    short, long = (width, height) if width <= height else (height, width)
    if short == s:
        return width, height
    new_long = int(s * long / short)
    return (s, new_long) if width <= height else (new_long, s)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    if h < size or w < size:
        raise ValueError(f"image of {w}x{h} after resizing is smaller than the {size}x{size} crop")
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img[top:top + size, left:left + size]


def apply_geometry(img: np.ndarray, resizer: str, size: int, crop_pct: float, geometry: str) -> np.ndarray:
    h, w = img.shape[:2]
    W, H = resized_size(w, h, size, crop_pct, geometry)
    if (W, H) != (w, h):  # torchvision returns the image itself when no resize is needed
        img = resize(img, (W, H), resizer)
    return center_crop(img, size)
