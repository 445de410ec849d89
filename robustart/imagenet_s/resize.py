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

_PIL_FILTERS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
_CV2_FLAGS = {"nearest": "INTER_NEAREST", "linear": "INTER_LINEAR", "area": "INTER_AREA", "cubic": "INTER_CUBIC",
              "lanczos4": "INTER_LANCZOS4"}

RESIZERS: dict[str, str] = {}
for _f in _PIL_FILTERS:
    RESIZERS[f"pil-{_f}"] = f"Pillow Image.resize, {_f.upper()} filter"
for _f in _PIL_FILTERS:
    RESIZERS[f"pil-simd-{_f}"] = f"Pillow-SIMD Image.resize, {_f.upper()} filter (worker process)"
for _f in _CV2_FLAGS:
    RESIZERS[f"opencv-{_f}"] = f"OpenCV cv2.resize, {_CV2_FLAGS[_f]}"
for _f in ("bilinear", "bicubic"):
    RESIZERS[f"torch-{_f}"] = f"torch.nn.functional.interpolate {_f}, no antialias (float, rounded)"
    RESIZERS[f"torch-{_f}-aa"] = f"torch.nn.functional.interpolate {_f}, antialias=True (float, rounded)"

GEOMETRIES = {
    "eval": "the model's eval transform: shorter side to size/crop_pct, center crop (reference)",
    "square": "ImageNet-S: both sides to size/crop_pct, aspect ratio not kept, center crop",
}

# timm interpolation names -> the Pillow resizer the model's own eval transform uses
MODEL_RESIZERS = {"bicubic": "pil-bicubic", "bilinear": "pil-bilinear", "nearest": "pil-nearest",
                  "lanczos": "pil-lanczos", "box": "pil-box", "hamming": "pil-hamming"}


def check_name(name: str) -> str:
    if name not in RESIZERS:
        import difflib

        close = difflib.get_close_matches(str(name), RESIZERS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DecoderError(f"unknown resizer {name!r}.{hint} Resizers: {', '.join(RESIZERS)} "
                           "(or `model`: the model's own, Pillow with its interpolation).")
    return name


def model_resizer(interpolation: str) -> str:
    try:
        return MODEL_RESIZERS[interpolation]
    except KeyError:
        raise DecoderError(f"the model's eval interpolation {interpolation!r} has no Pillow resizer here; "
                           f"known: {', '.join(MODEL_RESIZERS)}.") from None


def resize(img: np.ndarray, size: tuple[int, int], name: str) -> np.ndarray:
    """`img` (H, W, 3) uint8 -> (size[1], size[0], 3) uint8 with backend `name`."""
    w, h = size
    if name.startswith("pil-simd-"):
        from robustart.imagenet_s.decoders import pil_simd

        return pil_simd.resize(img, size, name[len("pil-simd-"):])
    if name.startswith("pil-"):
        from PIL import Image

        flt = getattr(Image.Resampling, name[4:].upper())
        return np.asarray(Image.fromarray(img).resize((w, h), flt))
    if name.startswith("opencv-"):
        cv2 = need("cv2", f"resizer {name!r}")
        return cv2.resize(img, (w, h), interpolation=getattr(cv2, _CV2_FLAGS[name[7:]]))
    if name.startswith("torch-"):
        import torch
        import torch.nn.functional as F

        mode = name.split("-")[1]
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
        out = F.interpolate(t, size=(h, w), mode=mode, align_corners=False, antialias=name.endswith("-aa"))
        return out[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    check_name(name)
    raise AssertionError(name)


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
