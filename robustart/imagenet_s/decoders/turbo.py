"""libjpeg-turbo through simplejpeg, with its DCT and chroma-upsampling options exposed:
`fastdct` (fast integer IDCT instead of the accurate one) and `fastupsample` (plain replication
instead of libjpeg's 'fancy' triangular chroma upsampling)."""

from __future__ import annotations

import numpy as np

from robustart.errors import need


class Decoder:
    def __init__(self, name: str, fastdct: bool = False, fastupsample: bool = False):
        self.name = name
        self.fastdct = fastdct
        self.fastupsample = fastupsample

    def unavailable(self) -> str | None:
        need("simplejpeg", f"decoder {self.name!r}")

        return None

    def version(self) -> str:
        import simplejpeg

        return f"simplejpeg {simplejpeg.__version__}"

    def decode(self, data: bytes) -> np.ndarray:
        import simplejpeg

        img = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=self.fastdct, fastupsample=self.fastupsample)
        return np.ascontiguousarray(img)
