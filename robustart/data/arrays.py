"""Small image datasets that live in a few files and are read into memory whole.

  fashion-mnist[:train|test][:PATH]   the idx files (gzipped or not) that Debian's
      `dataset-fashion-mnist` installs in /usr/share/datasets/fashion-mnist (the default PATH),
      or torchvision's layout (PATH/FashionMNIST/raw/...). 1 x 28 x 28 grayscale, 10 classes.
  cifar10:PATH[:train|test]           torchvision's `cifar-10-batches-py` folder (PATH may be it
      or its parent). 3 x 32 x 32, 10 classes.

Samples are `<split>/<index:05d>` in file order, labels come from the files, and each sample's
image is a uint8 CHW tensor (no decoding, no ImageNet resize/crop).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

from robustart.errors import DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "test")


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzipped or not): magic 0x0000 + dtype byte 0x08 (uint8) + ndim, sizes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read it ({e}).") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path}: not a uint8 idx file (bad magic number).")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: truncated idx file ({body.size} values, header says {dims}).")
    return body.reshape(dims)


def _idx_file(root: Path, stem: str) -> Path:
    for folder in (root, root / "FashionMNIST" / "raw", root / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    raise DataError(
        f"Fashion-MNIST: {stem}[.gz] is not in {root}. Install Debian's dataset-fashion-mnist "
        f"(apt-get install dataset-fashion-mnist, files in {FASHION_MNIST_DIR}) or pass the folder "
        "holding the idx files: --data fashion-mnist:test:/path/to/folder"
    )


def _stamp(files) -> tuple:
    """What the read cache is keyed on: a changed file is read again."""
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)


def fashion_mnist(root: Path = FASHION_MNIST_DIR, split: str = "test") -> tuple[np.ndarray, np.ndarray, tuple[Path, ...]]:
    """(images uint8 (N, 1, 28, 28), labels int64 (N,), files)."""
    prefix = "train" if split == "train" else "t10k"
    fi, fl = _idx_file(root, f"{prefix}-images-idx3-ubyte"), _idx_file(root, f"{prefix}-labels-idx1-ubyte")
    return _fashion_mnist(fi, fl, _stamp((fi, fl)))


@lru_cache(maxsize=4)
def _fashion_mnist(fi: Path, fl: Path, stamp: tuple):
    images, labels = read_idx(fi), read_idx(fl)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{fi}, {fl}: shapes {images.shape} and {labels.shape} are not images and their labels.")
    if labels.max() > 9:
        raise DataError(f"{fl}: labels must be 0..9, found {int(labels.max())}.")
    return images[:, None].copy(), labels.astype(np.int64), (fi, fl)


class _ArraysOnly(pickle.Unpickler):
    """The CIFAR-10 batches are pickled dicts of numpy arrays and lists. Unpickling can run any
    callable a file names, so only numpy's array reconstruction is allowed here."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR-10 batch holds only arrays")


def _cifar_dir(root: Path) -> Path:
    for d in (root, root / "cifar-10-batches-py"):
        if (d / "test_batch").is_file() or (d / "data_batch_1").is_file():
            return d
    raise DataError(
        f"CIFAR-10: {root} holds no `cifar-10-batches-py` batches (data_batch_1..5, test_batch). "
        "Download CIFAR-10 (python version) and pass its folder: --data cifar10:/path/to/cifar-10-batches-py"
    )


def cifar10(root: Path, split: str = "test") -> tuple[np.ndarray, np.ndarray, tuple[Path, ...]]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,), files)."""
    d = _cifar_dir(root)
    files = tuple(d / f"data_batch_{i}" for i in range(1, 6)) if split == "train" else (d / "test_batch",)
    for f in files:
        if not f.is_file():
            raise DataError(f"CIFAR-10: {f} is missing.")
    return _cifar10(files, _stamp(files))


@lru_cache(maxsize=4)
def _cifar10(files: tuple[Path, ...], stamp: tuple):
    images, labels = [], []
    for f in files:
        try:
            with open(f, "rb") as fh:
                batch = _ArraysOnly(fh, encoding="bytes").load()
        except FileNotFoundError:
            raise DataError(f"CIFAR-10: {f} is missing.") from None
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            raise DataError(f"CIFAR-10: {f} is not a CIFAR-10 batch ({e}).") from None
        try:
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            lab = np.asarray(batch[b"labels"], dtype=np.int64)
        except (KeyError, TypeError) as e:
            raise DataError(f"CIFAR-10: {f} lacks the data/labels entries ({e}).") from None
        if data.ndim != 2 or data.shape[1] != 3072 or len(lab) != len(data):
            raise DataError(f"CIFAR-10: {f}: data {data.shape} / labels {lab.shape} are not 3072-byte images.")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels), files


def open_arrays(kind: str, rest: str):
    """A DataSource for `fashion-mnist[:split][:PATH]` / `cifar10:PATH[:split]` specs."""
    import torch

    from robustart.data.sources import DataSource, Sample

    parts = [p for p in rest.split(":") if p] if rest else []
    split = "test"
    paths = []
    for p in parts:
        if p in SPLITS:
            split = p
        else:
            paths.append(p)
    path = Path(":".join(paths)).expanduser() if paths else None
    if kind == "fashion-mnist":
        root = path or FASHION_MNIST_DIR
        if not root.is_dir():
            raise DataError(
                f"--data fashion-mnist: {root} is not a folder. Install Debian's dataset-fashion-mnist "
                f"(files in {FASHION_MNIST_DIR}) or give the folder: fashion-mnist:test:/path"
            )
        images, labels, files = fashion_mnist(root, split)
    else:
        if path is None:
            raise DataError("--data cifar10:PATH[:train|test]: give the cifar-10-batches-py folder.")
        if not path.is_dir():
            raise DataError(f"--data cifar10:{path}: not a folder.")
        images, labels, files = cifar10(path, split)
    index = {}
    samples = []
    for i, lab in enumerate(labels.tolist()):
        sid = f"{split}/{i:05d}"
        index[sid] = i
        samples.append(Sample(sid, int(lab), files[0]))
    tensor = torch.from_numpy(images)

    def read(sample):
        return tensor[index[sample.id]]

    return DataSource(kind, files[0].parent, samples, 10, read=read, split=split)
