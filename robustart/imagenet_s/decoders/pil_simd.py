"""Pillow-SIMD, in a long-lived worker process (one per process that uses it: each DataLoader
worker starts its own on first use, so nothing is shared across a fork)."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from robustart.imagenet_s.decoders import DecoderError

SETUP_HINT = "run `robustart imagenet-s setup` to install it (it builds from source in under a minute)"


def candidate_dirs() -> list[Path]:
    """Where Pillow-SIMD is looked for, in order: ROBUSTART_PILLOW_SIMD alone when it is set;
    else the active Python environment's prefix (`<venv>/pillow-simd`, where `make install`
    builds it), then $ROBUSTART_HOME/pillow-simd."""
    from robustart import settings

    value = os.environ.get("ROBUSTART_PILLOW_SIMD")
    if value:
        return [Path(value).expanduser()]
    out = [settings.home() / "pillow-simd"]
    if sys.prefix != sys.base_prefix:  # a virtual environment: its own folder comes first
        out.insert(0, Path(sys.prefix) / "pillow-simd")
    return out


def target_dir() -> Path:
    """Where Pillow-SIMD is (the first candidate folder that holds it), else where `robustart
    imagenet-s setup` installs it: the first candidate (the environment's prefix in a virtual
    environment), so the CLI of that environment finds it without any variable."""
    dirs = candidate_dirs()
    return next((d for d in dirs if installed(d)), dirs[0])


def installed(path: Path | None = None) -> bool:
    path = path or target_dir()
    return (path / "PIL" / "__init__.py").is_file() and any(path.glob("pillow_simd-*.dist-info"))


class Worker:
    """One Pillow-SIMD process and its pipes."""

    def __init__(self, path: Path):
        env = dict(os.environ)
        # Pillow-SIMD first, and nothing of the parent's site-packages' PIL ahead of it
        env["PYTHONPATH"] = str(path)
        env["PYTHONNOUSERSITE"] = "1"
        script = Path(__file__).with_name("_simd_worker.py")
        self.proc = subprocess.Popen([sys.executable, "-s", str(script)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.pid = os.getpid()
        self.path = path
        self.lock = threading.Lock()
        ok, version, file = self.call("hello")
        if not str(file).startswith(str(path)):
            self.close()
            raise DecoderError(f"the Pillow-SIMD worker imported PIL from {file}, not from {path}; "
                               f"reinstall with `robustart imagenet-s setup --force`.")
        self.version = version

    def call(self, *msg):
        with self.lock:
            data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
            try:
                self.proc.stdin.write(struct.pack("<Q", len(data)) + data)
                self.proc.stdin.flush()
                head = self.proc.stdout.read(8)
                if len(head) < 8:
                    raise BrokenPipeError
                (n,) = struct.unpack("<Q", head)
                reply = pickle.loads(self.proc.stdout.read(n))
            except (BrokenPipeError, OSError):
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
                raise DecoderError(f"the Pillow-SIMD worker stopped: {err.strip()[-500:] or 'no message'}") from None
        if reply[0] != "ok":
            raise ValueError(f"Pillow-SIMD: {reply[1]}")
        return reply

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()


_WORKER: Worker | None = None


def worker() -> Worker:
    """This process's worker (a forked child starts its own instead of sharing its parent's)."""
    global _WORKER
    path = target_dir()
    if _WORKER is None or _WORKER.pid != os.getpid() or _WORKER.proc.poll() is not None or _WORKER.path != path:
        if not installed(path):
            raise DecoderError(f"Pillow-SIMD is not set up in {path}: {SETUP_HINT}.")
        if _WORKER is not None and _WORKER.pid == os.getpid():
            _WORKER.close()
        _WORKER = Worker(path)
    return _WORKER


class Decoder:
    def __init__(self, name: str):
        self.name = name

    def unavailable(self) -> str | None:
        path = target_dir()
        return None if installed(path) else f"decoder 'pil-simd': Pillow-SIMD is not set up in {path}: {SETUP_HINT}."

    def version(self) -> str:
        return f"Pillow-SIMD {worker().version}"

    def decode(self, data: bytes) -> np.ndarray:
        _, shape, raw = worker().call("decode", bytes(data))
        return np.frombuffer(raw, np.uint8).reshape(shape).copy()


def resize(img: np.ndarray, size: tuple[int, int], flt: str) -> np.ndarray:
    """Pillow-SIMD's resize of an RGB uint8 array to (width, height)."""
    img = np.ascontiguousarray(img)
    _, shape, raw = worker().call("resize", img.tobytes(), img.shape, tuple(size), flt)
    return np.frombuffer(raw, np.uint8).reshape(shape).copy()
