"""File names made from names (entry names, job names, user strings): never a path.

`checked_name` refuses a name that is not a plain file name (a separator, `..`, an absolute
path, a control character); `file_name` turns any name into a safe one (for caches, where the
name is only a readable part beside a hash); `inside` joins and checks the result lies in its
folder."""

from __future__ import annotations

import re
from pathlib import Path

from robustart.errors import RobustartError

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=,-]")


def checked_name(name: str, what: str) -> str:
    """`name` itself when it can be a file name as it is; else a RobustartError naming `what`."""
    if (not isinstance(name, str) or not name or name in (".", "..") or name.startswith(".")
            or "/" in name or "\\" in name or "\0" in name or any(ord(c) < 32 for c in name) or len(name) > 200):
        raise RobustartError(f"{what} {name!r} cannot be a file name: use letters, digits, '.', '_', '-' "
                             "(no '/', '\\', '..' or leading '.').")
    return name


def file_name(name: str, limit: int = 80) -> str:
    """A safe file-name part made from any name: unsafe characters become '_'."""
    out = re.sub(r"\.{2,}", ".", _UNSAFE.sub("_", str(name))).lstrip(".")[:limit]
    return out or "_"


def inside(folder: Path, name: str, what: str = "file name") -> Path:
    """folder / name, checked to lie inside `folder` (after resolving links)."""
    folder = Path(folder)
    path = folder / name
    root = folder.resolve()
    if path.resolve().parent != root:
        raise RobustartError(f"{what} {name!r} would write outside {folder}; refused.")
    return path
