"""Decoder backends: JPEG bytes -> uint8 RGB array (H, W, 3), C-contiguous.

Each backend is a module with `NAME`-keyed entries in DECODERS; a backend is imported only when
used, so a missing optional library only affects its own decoder. EXIF orientation is ignored by
every backend, as by Pillow (the reference): rotating would change the image, not its decoding.
"""

from __future__ import annotations

import importlib

from robustart.errors import RobustartError


class DecoderError(RobustartError):
    """An unknown decoder, or one that cannot run here (the message says what to do)."""


# name -> (module, options, one-line help)
DECODERS: dict[str, tuple[str, dict, str]] = {
    "pil": ("pil", {}, "Pillow (the reference decoder; libjpeg-turbo, accurate IDCT, fancy upsampling)"),
    "pil-simd": ("pil_simd", {}, "Pillow-SIMD in a worker process (`robustart imagenet-s setup` installs it)"),
    "opencv": ("opencv", {}, "OpenCV cv2.imdecode"),
    "torchvision": ("torchvision_io", {"device": "cpu"}, "torchvision.io.decode_jpeg on CPU (libjpeg-turbo)"),
    "torchvision-cuda": ("torchvision_io", {"device": "cuda"}, "torchvision.io.decode_jpeg on CUDA (nvJPEG)"),
    "ffmpeg": ("ffmpeg", {}, "the FFmpeg binary that imageio-ffmpeg ships (mjpeg decoder + swscale to rgb24)"),
    "turbo": ("turbo", {"fastdct": False, "fastupsample": False},
              "libjpeg-turbo via simplejpeg: accurate integer IDCT, fancy upsampling"),
    "turbo-fastdct": ("turbo", {"fastdct": True, "fastupsample": False}, "libjpeg-turbo: fast IDCT, fancy upsampling"),
    "turbo-fastupsample": ("turbo", {"fastdct": False, "fastupsample": True},
                           "libjpeg-turbo: accurate IDCT, plain (non-fancy) chroma upsampling"),
    "turbo-fast": ("turbo", {"fastdct": True, "fastupsample": True}, "libjpeg-turbo: fast IDCT, plain upsampling"),
}

_CACHE: dict = {}


def check_name(name: str) -> str:
    if name not in DECODERS:
        import difflib

        close = difflib.get_close_matches(str(name), DECODERS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DecoderError(f"unknown decoder {name!r}.{hint} Decoders: {', '.join(DECODERS)}.")
    return name


def get(name: str):
    """The decoder object for `name` (one per process): `.decode(bytes) -> ndarray`,
    `.version() -> str`."""
    check_name(name)
    dec = _CACHE.get(name)
    if dec is None:
        module, options, _ = DECODERS[name]
        mod = importlib.import_module(f"robustart.imagenet_s.decoders.{module}")
        dec = _CACHE[name] = mod.Decoder(name, **options)
    return dec


def unavailable(name: str) -> str | None:
    """Why decoder `name` cannot run here (None when it can)."""
    try:
        return get(name).unavailable()
    except RobustartError as e:  # an unknown name, a missing extra
        return str(e)
    except ImportError as e:
        return f"decoder {name!r} needs a library that is not installed: {e}"


def decode(name: str, data: bytes):
    return get(name).decode(data)


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's SOF marker, without decoding."""
    i, n = 2, len(data)
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG file (no SOI marker)")
    while i + 4 <= n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xFF, 0x01) or 0xD0 <= marker <= 0xD8:
            i += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h = int.from_bytes(data[i + 5:i + 7], "big")
            w = int.from_bytes(data[i + 7:i + 9], "big")
            return w, h
        i += 2 + length
    raise ValueError("JPEG without a frame header (SOF marker)")
