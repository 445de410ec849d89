"""`robustart imagenet-s setup`: Pillow-SIMD in its own folder (it is also `PIL`, so it cannot be
installed beside Pillow; the pil-simd decoder and resizers run it in a worker process)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from robustart.errors import RobustartError

# Pillow-SIMD builds from source: it needs a C compiler and the zlib and libjpeg headers.
_HEADERS = {"zlib.h": "zlib1g-dev", "jpeglib.h": "libjpeg-dev (or libjpeg62-turbo-dev)"}


def missing_headers() -> list[str]:
    """apt packages whose headers a Pillow-SIMD build needs and that are not found."""
    dirs = [Path("/usr/include"), Path("/usr/local/include"), *Path("/usr/include").glob("*-linux-gnu")]
    return [pkg for h, pkg in _HEADERS.items() if not any((d / h).is_file() for d in dirs)]


def install(target: Path | None = None, version: str | None = None, force: bool = False, log=print) -> Path:
    """Build and install Pillow-SIMD into `target` (default: the pil-simd decoder's folder) and
    check that a worker can import it. Returns the folder."""
    from robustart.imagenet_s.decoders import pil_simd

    target = Path(target) if target else pil_simd.target_dir()
    if pil_simd.installed(target) and not force:
        log(f"Pillow-SIMD is already set up in {target} (--force reinstalls).")
        return target
    req = f"pillow-simd=={version}" if version else "pillow-simd"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".pillow-simd-", dir=target.parent))
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input", "--target", str(tmp), req]
    log(f"building {req} into {target} (from source; about a minute) ...")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])
        missing = missing_headers()
        hint = (f" Missing build headers: install {', '.join(missing)} (apt-get install ...), then retry."
                if missing else " It needs a C compiler and the zlib/libjpeg headers, and PyPI (or a pip index).")
        raise RobustartError(f"pip could not build {req}.{hint}\n{tail}")
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)  # the folder appears whole or not at all
    try:
        version = pil_simd.Worker(target).version
    except Exception as e:
        raise RobustartError(f"Pillow-SIMD was installed in {target} but a worker cannot import it: {e}") from None
    log(f"Pillow-SIMD {version} is set up in {target}.")
    return target
