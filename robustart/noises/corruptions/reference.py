"""The reference: `imagecorruptions` (NumPy / OpenCV / scikit-image, one image at a time on CPU).

Randomness is made reproducible per sample: the global NumPy generator is seeded from (seed,
sample id) before each call, and the corruptions that take an explicit `seed` (glass_blur, whose
numba kernel ignores the global seed, and impulse_noise) get one too.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np

_SEEDED = ("glass_blur", "impulse_noise")


def numpy_seed(seed: int, sample_id: str, salt: str = "") -> int:
    h = hashlib.sha256(f"{seed}\x00{sample_id}\x00{salt}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def corrupt_one(img: np.ndarray, name: str, severity: int, seed: int | None = None) -> np.ndarray:
    """One HWC uint8 image through the reference; `seed` makes it reproducible."""
    from robustart.errors import need

    corrupt = need("imagecorruptions", "the reference corruptions (impl=reference)").corrupt
    kwargs = {}
    if seed is not None:
        np.random.seed(seed)
        if name in _SEEDED:
            kwargs["seed"] = seed
    out = corrupt(img, corruption_name=name, severity=severity, **kwargs)
    if out.shape != img.shape:  # the reference keeps the shape for 3-channel input; be sure
        raise RuntimeError(f"reference {name} returned shape {out.shape} for {img.shape}")
    return out


def jpeg_roundtrip_pil(img: np.ndarray, quality: int) -> np.ndarray:
    """Save as JPEG with Pillow and read back, as the released ImageNet-C files were made."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB")).copy()
