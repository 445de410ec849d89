"""FFmpeg (the binary imageio-ffmpeg ships): its own mjpeg decoder, then swscale to rgb24. One
process per image: FFmpeg has no library API here, and its start-up cost is part of the backend."""

from __future__ import annotations

import subprocess

import numpy as np

from robustart.errors import MissingExtraError, need


class Decoder:
    def __init__(self, name: str):
        self.name = name
        self._exe = None

    def exe(self) -> str:
        if self._exe is None:
            imageio_ffmpeg = need("imageio_ffmpeg", "decoder 'ffmpeg'")
            self._exe = imageio_ffmpeg.get_ffmpeg_exe()
        return self._exe

    def unavailable(self) -> str | None:
        try:
            self.exe()
        except MissingExtraError as e:
            return str(e)
        except Exception as e:
            return f"decoder 'ffmpeg' needs the FFmpeg binary from imageio-ffmpeg (pip install imageio-ffmpeg): {e}"
        return None

    def version(self) -> str:
        import imageio_ffmpeg

        return f"FFmpeg {imageio_ffmpeg.get_ffmpeg_version()}"

    def decode(self, data: bytes) -> np.ndarray:
        from robustart.imagenet_s.decoders import jpeg_size

        w, h = jpeg_size(data)
        cmd = [self.exe(), "-v", "error", "-nostdin", "-noautorotate", "-f", "jpeg_pipe", "-i", "pipe:0",
               "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        p = subprocess.run(cmd, input=data, capture_output=True, check=False)
        if p.returncode != 0 or len(p.stdout) != w * h * 3:
            msg = p.stderr.decode(errors="replace").strip().splitlines()
            raise ValueError(f"ffmpeg could not decode the file ({msg[-1] if msg else f'{len(p.stdout)} bytes out'})")
        return np.frombuffer(p.stdout, np.uint8).reshape(h, w, 3).copy()
