"""torchvision.io.decode_jpeg: libjpeg-turbo on CPU, nvJPEG on CUDA."""

from __future__ import annotations

import numpy as np


class Decoder:
    def __init__(self, name: str, device: str = "cpu"):
        self.name = name
        self.device = device

    def unavailable(self) -> str | None:
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            return f"decoder {self.name!r} decodes with nvJPEG and needs a CUDA GPU; use `torchvision` on CPU."
        return None

    def version(self) -> str:
        import torchvision

        return f"torchvision {torchvision.__version__} ({'nvJPEG' if self.device == 'cuda' else 'libjpeg-turbo'})"

    def decode(self, data: bytes) -> np.ndarray:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        why = self.unavailable()
        if why:
            raise RuntimeError(why)
        t = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        try:
            img = decode_jpeg(t, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError as e:
            if self.device == "cuda" and "fork" in str(e).lower():
                raise RuntimeError(f"{e}; nvJPEG cannot run in forked decoding workers: run with --workers 0") from None
            raise
        return np.ascontiguousarray(img.permute(1, 2, 0).cpu().numpy())
