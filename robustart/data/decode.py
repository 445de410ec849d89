"""Decode an image file to an RGB PIL image, converting what can be converted and naming
what cannot. Bad files never stop a run: the engine records them as failed with the reason."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError


class BadImageError(Exception):
    """The file cannot be used as an image; the message is the recorded reason."""


def load_rgb(path: str | Path) -> tuple[Image.Image, str]:
    """(RGB image, note). The note says what conversion was applied ("" when none)."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImageError("empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Palette images with transparency"
            with Image.open(path) as im:
                im.load()  # decode now: truncated files fail here, not later
                mode = im.mode
                if mode == "RGB":
                    return im.copy(), ""
                if mode in ("I;16", "I;16B", "I;16L", "I"):
                    # 16/32-bit grayscale: scale to 8 bit instead of clipping at 255
                    import numpy as np

                    a = np.asarray(im, dtype=np.float64)
                    hi = 65535.0 if mode.startswith("I;16") else max(float(a.max()), 1.0)
                    im8 = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype("uint8"))
                    return im8.convert("RGB"), f"converted from {mode}"
                has_alpha = mode in ("RGBA", "LA", "PA") or (
                    mode == "P" and "transparency" in im.info
                )
                # Like the standard loaders (torchvision, timm): plain convert, alpha dropped.
                note = f"converted from {mode}" + (" (alpha dropped)" if has_alpha else "")
                return im.convert("RGB"), note
    except FileNotFoundError:
        raise BadImageError("file not found") from None
    except UnidentifiedImageError:
        raise BadImageError("not an image (unrecognised format)") from None
    except Image.DecompressionBombError as e:
        raise BadImageError(f"image too large ({e})") from None
    except OSError as e:
        msg = str(e)
        if "truncated" in msg:
            raise BadImageError(f"truncated image file ({msg})") from None
        raise BadImageError(f"cannot decode ({msg})") from None
    except (ValueError, SyntaxError) as e:  # Pillow raises these for some corrupt headers
        raise BadImageError(f"cannot decode ({e})") from None
