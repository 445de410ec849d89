"""Where robustart keeps things. Every location is a setting (environment variable)."""

from __future__ import annotations

import os
from pathlib import Path


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


def home() -> Path:
    """Root of robustart's own files (ROBUSTART_HOME, default ~/.robustart)."""
    return _env_path("ROBUSTART_HOME", Path.home() / ".robustart")


def weights_dir() -> Path:
    """Checkpoint cache (ROBUSTART_CACHE, default $ROBUSTART_HOME/weights)."""
    return _env_path("ROBUSTART_CACHE", home() / "weights")


def store_dir() -> Path:
    """Results store (ROBUSTART_STORE, default $ROBUSTART_HOME/results)."""
    return _env_path("ROBUSTART_STORE", home() / "results")


def offline() -> bool:
    """True when downloads are off (ROBUSTART_OFFLINE=1 or HF_HUB_OFFLINE=1)."""
    truthy = {"1", "true", "yes", "on"}
    return (
        os.environ.get("ROBUSTART_OFFLINE", "").lower() in truthy
        or os.environ.get("HF_HUB_OFFLINE", "").lower() in truthy
    )


def imagenet_sample() -> Path | None:
    """A folder of `<wnid>_<name>.JPEG` ImageNet images (ROBUSTART_IMAGENET_SAMPLE), if set."""
    value = os.environ.get("ROBUSTART_IMAGENET_SAMPLE")
    return Path(value).expanduser() if value else None
