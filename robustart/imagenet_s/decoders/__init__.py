"""Decoder backends: JPEG bytes -> uint8 RGB array (H, W, 3), C-contiguous.

Each backend is a module with a `Decoder` class, registered by name in DECODERS (a
robustart.registry.Registry); a backend is imported only when used, so a missing optional
library only affects its own decoder. EXIF orientation is ignored by
every backend, as by Pillow (the reference): rotating would change the image, not its decoding.
"""

from __future__ import annotations

import importlib

from robustart.errors import RobustartError
from robustart.registry import Registry


class DecoderError(RobustartError):
    """An unknown decoder, or one that cannot run here (the message says what to do)."""


class DecoderSpec:
    """A registered decoder: the module in this package that implements it (imported only when
    the decoder is used, so a missing optional library affects its own decoder alone), the
    options its `Decoder` class takes, and a one-line help. A new decoder is one module with a
    `Decoder(name, **options)` class (`decode(bytes) -> ndarray`, `version()`, `unavailable()`)
    and one `DECODERS.register(...)` line below; a decoder outside this package gives its full
    module path."""

    def __init__(self, module: str, options: dict | None = None, help: str = ""):
        self.module = module if "." in module else f"robustart.imagenet_s.decoders.{module}"
        self.options = dict(options or {})
        self.help = help

    def make(self, name: str):
        return importlib.import_module(self.module).Decoder(name, **self.options)


DECODERS = Registry("decoder", error=DecoderError, message="unknown decoder {name!r}.{hint} Decoders: {names}.")
DECODERS.register("pil", DecoderSpec("pil", {}, "Pillow (the reference decoder; libjpeg-turbo, accurate IDCT, fancy upsampling)"))
DECODERS.register("pil-simd", DecoderSpec("pil_simd", {}, "Pillow-SIMD in a worker process (`robustart imagenet-s setup` installs it)"))
DECODERS.register("opencv", DecoderSpec("opencv", {}, "OpenCV cv2.imdecode"))
DECODERS.register("torchvision", DecoderSpec("torchvision_io", {"device": "cpu"}, "torchvision.io.decode_jpeg on CPU (libjpeg-turbo)"))
DECODERS.register("torchvision-cuda", DecoderSpec("torchvision_io", {"device": "cuda"}, "torchvision.io.decode_jpeg on CUDA (nvJPEG)"))
DECODERS.register("ffmpeg", DecoderSpec("ffmpeg", {}, "the FFmpeg binary that imageio-ffmpeg ships (mjpeg decoder + swscale to rgb24)"))
DECODERS.register("turbo", DecoderSpec("turbo", {"fastdct": False, "fastupsample": False},
                                       "libjpeg-turbo via simplejpeg: accurate integer IDCT, fancy upsampling"))
DECODERS.register("turbo-fastdct", DecoderSpec("turbo", {"fastdct": True, "fastupsample": False},
                                               "libjpeg-turbo: fast IDCT, fancy upsampling"))
DECODERS.register("turbo-fastupsample", DecoderSpec("turbo", {"fastdct": False, "fastupsample": True},
                                                    "libjpeg-turbo: accurate IDCT, plain (non-fancy) chroma upsampling"))
DECODERS.register("turbo-fast", DecoderSpec("turbo", {"fastdct": True, "fastupsample": True},
                                            "libjpeg-turbo: fast IDCT, plain upsampling"))

_CACHE: dict = {}


def check_name(name: str) -> str:
    DECODERS.get(name)
    return name


def get(name: str):
    """The decoder object for `name` (one per process): `.decode(bytes) -> ndarray`,
    `.version() -> str`."""
    spec = DECODERS.get(name)
    dec = _CACHE.get(name)
    if dec is None:
        dec = _CACHE[name] = spec.make(name)
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
