"""Dataset sources. Every source yields samples ordered by their relative path, which is also
the sample id, so `--limit N` always means the same N images.

  ImageFolder   root/<class>/<file>            (ImageNet val in wnid folders; other class names
                                               need a class map: --classes FILE or root/classes.txt)
  FlatFolder    root/<wnid>_<name>.JPEG         (the layout of the shared ImageNet sample)
  LabelsFile    a text file of `relative/path label` lines (label: index or wnid)
  BuiltinSample a few real photos that installed packages ship, with ImageNet labels

Pre-rendered robustness datasets (found by layout or folder name, or named explicitly with a
prefix: `imagenet-c:PATH`, `imagenet-a:PATH`, `imagenet-r:PATH`, `imagenet-sketch:PATH`,
`imagenetv2:PATH`):

  ImageNet-C      root/<corruption>/<severity>/<wnid>/<file>; also one corruption folder or one
                  severity folder of it. Sample ids are always `<corruption>/<severity>/<wnid>/
                  <file>`, so a run's records split into corruption x severity cells.
  ImageNet-A, -R  root/<wnid>/<file> over 200 ImageNet-1k classes (folder named imagenet-a /
                  imagenet-r, or the prefix). Labels stay ImageNet-1k indices; `class_subset` holds
                  the 1k indices of the wnid folders present (200 for a full copy), and the model's
                  logits outside it are ignored, as the datasets' papers evaluate.
  ImageNet-Sketch root/<wnid>/<file>, 1000 classes (folder named sketch / imagenet-sketch).
  ImageNetV2      root/<index>/<file> with folders named by class index 0..999 (not wnids).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from robustart.errors import DataError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".gif"}
_WNID = re.compile(r"^n\d{8}$")
_FLAT = re.compile(r"^(n\d{8})_")


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in index order (sorted), from timm's bundled class info."""
    from timm.data import ImageNetInfo

    wnids = tuple(ImageNetInfo().label_names())
    assert len(wnids) == 1000 and list(wnids) == sorted(wnids)
    return wnids


@lru_cache(maxsize=1)
def _wnid_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_wnids())}


def imagenet_class_name(index: int) -> str:
    from timm.data import ImageNetInfo

    return ImageNetInfo().index_to_description(index)


@dataclass(frozen=True)
class Sample:
    id: str  # relative path, the ordering key
    label: int
    path: Path


@dataclass
class DataSource:
    kind: str
    root: Path
    samples: list[Sample]
    num_classes: int = 1000
    skipped: list[str] = field(default_factory=list)  # files ignored while listing: "path: reason"
    # ImageNet-1k indices (sorted) the dataset's classes are restricted to (ImageNet-A/R); the
    # model's logits outside them are masked. None: all classes compete.
    class_subset: tuple[int, ...] | None = None
    # In-memory datasets (data/arrays.py): sample -> uint8 CHW tensor, instead of decoding a file.
    read: object = None
    split: str | None = None

    def skipped_items(self) -> list[tuple[str, str]]:
        """(path, reason) of every skipped file."""
        return [tuple(s.rsplit(": ", 1)) if ": " in s else (s, "skipped") for s in self.skipped]

    @property
    def name(self) -> str:
        if self.split:
            return f"{self.kind}:{self.split}"
        return "builtin" if self.kind == "builtin" else f"{self.kind}:{self.root.name}"

    def take(self, limit: int | None) -> list[Sample]:
        if limit is not None and limit < 0:
            raise DataError(f"--limit must be >= 0, got {limit}")
        return self.samples if limit is None else self.samples[:limit]

    @staticmethod
    def fingerprint(samples: list[Sample]) -> str:
        """Hash of (id, label, file size, modification time) of the samples: cheap (one stat per
        file), and changes when a file is replaced, even by one of the same size. Content hashes
        are opt-in (`verify_data`: robustart.engine.plan.content_hash)."""
        h = hashlib.sha256()
        for s in samples:
            try:
                st = s.path.stat()
                size, mtime = st.st_size, st.st_mtime_ns
            except (OSError, TypeError, AttributeError):
                size, mtime = -1, -1
            h.update(json.dumps([s.id, s.label, size, mtime]).encode())
        return h.hexdigest()[:16]


def _is_image_name(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def _sorted(samples: list[Sample]) -> list[Sample]:
    return sorted(samples, key=lambda s: s.id)


def _not_a_file(p: Path) -> str | None:
    """Why an entry of a data folder is not a readable file (None when it is one)."""
    if p.is_symlink() and not p.exists():
        try:
            p.resolve(strict=True)
        except RuntimeError:
            return "symbolic link loop"
        except OSError:
            return "broken symbolic link"
        return "broken symbolic link"
    if not p.is_file():
        return "not a regular file"
    return None


def _walk(folder: Path, root: Path, skipped: list[str]):
    """The image files under `folder` (sorted, symbolic links to folders not followed); every
    other entry is recorded in `skipped` with its reason. Hidden entries (.DS_Store,
    .ipynb_checkpoints/) are not data: each counts once, without its contents."""
    stack = [folder]
    while stack:
        d = stack.pop()
        try:
            children = sorted(d.iterdir())
        except OSError as e:
            skipped.append(f"{d.relative_to(root).as_posix()}: cannot be listed ({e.strerror or e})")
            continue
        for p in children:
            rel = p.relative_to(root).as_posix()
            if p.name.startswith("."):
                skipped.append(f"{rel}: hidden")
            elif p.is_dir() and not p.is_symlink():
                stack.append(p)
            elif (why := _not_a_file(p)) is not None:
                skipped.append(f"{rel}: {why}")
            elif not _is_image_name(p):
                skipped.append(f"{rel}: not an image file name")
            else:
                yield rel, p


def _class_map_file(root: Path, classes: str | Path | None) -> Path | None:
    if classes is not None:
        path = Path(classes).expanduser()
        if not path.is_file():
            raise DataError(f"--classes {classes}: no such file.")
        return path
    path = root / "classes.txt"
    return path if path.is_file() else None


def read_class_map(path: Path) -> dict[str, int]:
    """An ImageFolder's class map: lines of `folder label` (label: an ImageNet wnid or a class
    index), or folder names alone, one per line, whose labels are then 0, 1, ... in file order
    (positional labels, asked for by writing the order down). '#' starts a comment line."""
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"class map {path}: cannot read it ({e}).") from None
    rows = [ln.rsplit(None, 1) for ln in lines if ln and not ln.startswith("#")]
    if not rows:
        raise DataError(f"class map {path}: it lists no classes.")
    index = _wnid_index()
    out: dict[str, int] = {}
    paired = len(rows[0]) == 2
    for n, row in enumerate(rows):
        if (len(row) == 2) != paired:
            raise DataError(f"class map {path}: mix of `folder label` lines and bare folder names ({' '.join(row)!r}); "
                            "use one form for every line.")
        if paired:
            name, lab = row
            if lab.isdecimal():
                label = int(lab)
            elif lab in index:
                label = index[lab]
            else:
                raise DataError(f"class map {path}: label {lab!r} of {name!r} is neither a class index nor an ImageNet wnid.")
        else:
            name, label = row[0], n
        if name in out:
            raise DataError(f"class map {path}: folder {name!r} is listed twice.")
        out[name] = label
    return out


def image_folder(root: Path, classes: str | Path | None = None) -> DataSource:
    """An ImageFolder. Its labels are ImageNet's when its class folders are wnids (other folders
    beside them are skipped and reported); any other class names need a class map (`classes`, or
    root/classes.txt), never positional labels the user did not ask for."""
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no class folders found (expected root/<class>/<image>).")
    skipped: list[str] = []
    map_file = _class_map_file(root, classes)
    if map_file is not None:
        label_of = read_class_map(map_file)
        num_classes = max(1000, max(label_of.values()) + 1)
        for c in folders:
            if c not in label_of:
                skipped.append(f"{c}/: folder not in the class map {map_file.name}")
    else:
        index = _wnid_index()
        wnids = [c for c in folders if c in index]
        if not wnids:
            raise DataError(
                f"{root}: its class folders ({', '.join(folders[:4])}{', ...' if len(folders) > 4 else ''}) are not "
                "ImageNet wnids, so robustart does not know their labels. Give a class map: --classes FILE, or "
                f"{root / 'classes.txt'}, with `folder label` lines (label: wnid or class index), or the folder "
                "names alone, one per line, for labels 0, 1, ... in that order.")
        for c in folders:
            if c not in index:
                why = "not an ImageNet-1k wnid" if _WNID.match(c) else "not an ImageNet wnid folder"
                skipped.append(f"{c}/: {why} (give --classes to use it)")
        label_of, num_classes = index, 1000
    samples = []
    for c in folders:
        if c not in label_of:
            continue
        for rel, p in _walk(root / c, root, skipped):
            samples.append(Sample(rel, label_of[c], p))
    for p in sorted(root.iterdir()):
        if not p.is_dir() and not p.name.startswith(".") and p != map_file:
            skipped.append(f"{p.name}: a file beside the class folders")
    if not samples:
        raise DataError(f"{root}: class folders hold no image files.")
    return DataSource("imagefolder", root, _sorted(samples), num_classes, skipped)


def flat_folder(root: Path) -> DataSource:
    index = _wnid_index()
    samples, skipped = [], []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            skipped.append(f"{p.name}: hidden")
            continue
        if p.is_dir() and not p.is_symlink():
            skipped.append(f"{p.name}/: a folder in a flat folder (not read)")
            continue
        why = _not_a_file(p)
        m = _FLAT.match(p.name)
        if why is not None:
            skipped.append(f"{p.name}: {why}")
        elif not _is_image_name(p):
            skipped.append(f"{p.name}: not an image file name")
        elif not m:
            skipped.append(f"{p.name}: name does not start with an ImageNet wnid")
        elif m.group(1) not in index:
            skipped.append(f"{p.name}: not an ImageNet-1k wnid")
        else:
            samples.append(Sample(p.name, index[m.group(1)], p))
    if not samples:
        raise DataError(
            f"{root}: no `<wnid>_<name>.<ext>` image files found (the flat ImageNet layout)."
        )
    return DataSource("flat", root, _sorted(samples), 1000, skipped)


def labels_file(path: Path, root: Path | None = None) -> DataSource:
    """Lines of `relative/path label`; paths are relative to `root` (default: the file's folder).
    Blank lines and lines starting with '#' are ignored. A label is a class index or a wnid."""
    root = root or path.parent
    index = _wnid_index()
    samples = []
    max_label = -1
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(
            f"{path}: cannot read it as a labels file of `relative/path label` lines ({e})."
        ) from None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise DataError(f"{path}:{n}: expected `relative/path label`, got {line!r}.")
        rel, lab = parts
        if lab.isdecimal():  # exactly what int() accepts ('²'.isdigit() is True)
            label = int(lab)
        elif lab in index:
            label = index[lab]
        else:
            raise DataError(f"{path}:{n}: label {lab!r} is neither a class index nor an ImageNet wnid.")
        if label >= 2**31 - 1:
            raise DataError(f"{path}:{n}: label {lab} is out of range (a class index is below the model's number "
                            "of classes).")
        max_label = max(max_label, label)
        samples.append(Sample(rel, label, root / rel))
    if not samples:
        raise DataError(f"{path}: the labels file lists no samples.")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{path}: {dup!r} is listed more than once.")
    return DataSource("labels", path, _sorted(samples), max(1000, max_label + 1))


# (package, file inside it, ImageNet-1k index, what it shows). Real photos, real labels.
BUILTIN = [
    ("skimage", "data/chelsea.png", 281, "tabby cat"),
    ("skimage", "data/coffee.png", 967, "espresso"),
    ("skimage", "data/rocket.jpg", 657, "missile (rocket on its launch pad)"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", 652, "military uniform"),
]


def builtin_sample() -> DataSource:
    import importlib.util

    samples = []
    for pkg, rel, label, _ in BUILTIN:
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise DataError(f"the built-in sample needs the package {pkg!r}; install it.")
        path = Path(list(spec.submodule_search_locations)[0]) / rel
        samples.append(Sample(f"{pkg}/{rel}", label, path))
    return DataSource("builtin", Path("builtin"), _sorted(samples), 1000)


# Small datasets read into memory whole (data/arrays.py): `fashion-mnist[:split][:PATH]`, `cifar10:PATH[:split]`.
_ARRAY_DATASETS = ("fashion-mnist", "cifar10")
_PRERENDERED = ("imagenet-c", "imagenet-a", "imagenet-r", "imagenet-sketch", "imagenetv2")
_SEVERITY_DIR = re.compile(r"^[1-5]$")


def _corruption_names() -> tuple[str, ...]:
    from robustart.data.imagenet_c import ALL

    return ALL


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _wnid_samples(folder: Path, prefix: str, label_of: dict[str, int], samples: list, skipped: list) -> None:
    """Samples of one `<wnid>/<file>` tree, with ids `prefix + <wnid>/<file>`."""
    for wdir in _subdirs(folder):
        if wdir.name not in label_of:
            skipped.append(f"{prefix}{wdir.name}: not an ImageNet-1k wnid folder")
            continue
        here: list[str] = []
        for rel, p in _walk(wdir, folder, here):
            samples.append(Sample(prefix + rel, label_of[wdir.name], p))
        skipped.extend(prefix + s for s in here)


def imagenet_c(path: Path) -> DataSource:
    """ImageNet-C: the whole tree, one corruption folder or one severity folder; ids are always
    `<corruption>/<severity>/<wnid>/<file>`."""
    names = set(_corruption_names())
    index = _wnid_index()
    if path.name in names:
        root, cells = path.parent, [(path.name, d) for d in _subdirs(path) if _SEVERITY_DIR.match(d.name)]
    elif _SEVERITY_DIR.match(path.name) and path.parent.name in names:
        root, cells = path.parent.parent, [(path.parent.name, path)]
    else:
        root = path
        cells = [(c.name, d) for c in _subdirs(path) if c.name in names
                 for d in _subdirs(c) if _SEVERITY_DIR.match(d.name)]
    if not cells:
        raise DataError(
            f"{path}: not an ImageNet-C layout. Expected <corruption>/<severity>/<wnid>/<image> "
            f"with corruption folders named {', '.join(sorted(names))} and severities 1-5."
        )
    samples: list[Sample] = []
    skipped: list[str] = []
    for corruption, sdir in cells:
        _wnid_samples(sdir, f"{corruption}/{sdir.name}/", index, samples, skipped)
    if not samples:
        raise DataError(f"{path}: the ImageNet-C folders hold no images in <wnid> folders.")
    return DataSource("imagenet-c", root, _sorted(samples), 1000, skipped)


def imagenet_wnid_dataset(path: Path, kind: str) -> DataSource:
    """ImageNet-A / -R / -Sketch: `<wnid>/<file>`, labels are ImageNet-1k indices. For A and R
    the class subset is the wnid folders present (the datasets ship exactly their 200 classes)."""
    index = _wnid_index()
    samples: list[Sample] = []
    skipped: list[str] = []
    _wnid_samples(path, "", index, samples, skipped)
    if not samples:
        raise DataError(f"{path}: no images in ImageNet wnid folders (expected {kind} as <wnid>/<image>).")
    subset = None
    if kind in ("imagenet-a", "imagenet-r"):
        subset = tuple(sorted({s.label for s in samples}))
    return DataSource(kind, path, _sorted(samples), 1000, skipped, class_subset=subset)


def imagenet_v2(path: Path) -> DataSource:
    """ImageNetV2: folders named by ImageNet-1k class index (0..999)."""
    samples: list[Sample] = []
    skipped: list[str] = []
    dirs = _subdirs(path)
    bad = [d.name for d in dirs if not (d.name.isdecimal() and int(d.name) < 1000)]
    if bad or not dirs:
        raise DataError(
            f"{path}: not an ImageNetV2 layout: expected folders named by class index 0..999"
            + (f", found {bad[:5]}" if bad else ", found none") + "."
        )
    for d in dirs:
        for rel, p in _walk(d, path, skipped):
            samples.append(Sample(rel, int(d.name), p))
    if not samples:
        raise DataError(f"{path}: the ImageNetV2 class folders hold no images.")
    return DataSource("imagenetv2", path, _sorted(samples), 1000, skipped)


def _open_prerendered(kind: str, path: Path) -> DataSource:
    if kind == "imagenet-c":
        return imagenet_c(path)
    if kind == "imagenetv2":
        return imagenet_v2(path)
    return imagenet_wnid_dataset(path, kind)


def _detect_prerendered(path: Path, dirs: list[Path]) -> str | None:
    """The pre-rendered dataset a folder is, from its layout or name; None if none."""
    names = set(_corruption_names())
    if path.name in names and any(_SEVERITY_DIR.match(d.name) for d in dirs):
        return "imagenet-c"
    if _SEVERITY_DIR.match(path.name) and path.parent.name in names:
        return "imagenet-c"
    if any(d.name in names and any(_SEVERITY_DIR.match(s.name) for s in _subdirs(d)) for d in dirs):
        return "imagenet-c"
    lname = path.name.lower().replace("_", "-")
    if lname in ("imagenet-a", "imagenet-r"):
        return lname
    if lname in ("sketch", "imagenet-sketch"):
        return "imagenet-sketch"
    if dirs and all(d.name.isdecimal() for d in dirs) and (
        "imagenetv2" in lname.replace("-", "") or {d.name for d in dirs} == {str(i) for i in range(1000)}
    ):
        return "imagenetv2"
    return None


def open_source(spec: str | Path | None = None, *, root: str | Path | None = None,
                classes: str | Path | None = None) -> DataSource:
    """See `_open_source`; `classes` (a class map) applies to ImageFolders only."""
    source = _open_source(spec, root=root, classes=classes)
    if classes is not None and source.kind != "imagefolder":
        raise DataError(f"--classes applies to an ImageFolder (root/<class>/<image>); --data {spec} is a "
                        f"{source.kind} dataset, whose labels it names itself.")
    return source


def _open_source(spec: str | Path | None = None, *, root: str | Path | None = None,
                 classes: str | Path | None = None) -> DataSource:
    """A data source from a user's `--data`: None/"builtin" -> built-in sample; a file -> labels
    file; a pre-rendered robustness dataset (ImageNet-C/A/R/Sketch/V2, by layout, folder name or
    a `KIND:PATH` prefix); `fashion-mnist[:train|test][:PATH]` or `cifar10:PATH[:train|test]`
    (in memory, data/arrays.py); a folder of class folders -> ImageFolder; a folder of `<wnid>_*.JPEG`
    -> flat."""
    if spec is None or str(spec) == "builtin":
        return builtin_sample()
    text = str(spec)
    kind, _, rest = text.partition(":")
    if kind.lower() in _ARRAY_DATASETS and not Path(text).expanduser().exists():
        from robustart.data.arrays import open_arrays

        return open_arrays(kind.lower(), rest)
    if kind.lower() in _PRERENDERED and rest and not Path(text).expanduser().exists():
        path = Path(rest).expanduser()
        if not path.is_dir():
            raise DataError(f"--data {spec}: {rest} is not a folder.")
        return _open_prerendered(kind.lower(), path)
    path = Path(spec).expanduser()
    if not path.exists():
        hint = ""
        if ":" in text:
            hint = f" (a dataset prefix is one of {', '.join(_PRERENDERED)}, e.g. imagenet-r:/data/imagenet-r)"
        raise DataError(f"--data {spec}: no such file or folder.{hint}")
    if path.is_file():
        return labels_file(path, Path(root).expanduser() if root else None)
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    dirs = sorted(p for p in entries if p.is_dir())
    kind = _detect_prerendered(path, dirs) if dirs else None
    if kind:
        return _open_prerendered(kind, path)
    if dirs and not any(_FLAT.match(p.name) and p.is_file() for p in entries):
        return image_folder(path, classes)
    if any(p.is_file() and _FLAT.match(p.name) for p in entries):
        return flat_folder(path)
    raise DataError(
        f"--data {spec}: not a known layout. Expected class folders (root/<class>/<image>), "
        "flat `<wnid>_<name>.JPEG` files, a labels file of `relative/path label` lines, or a "
        f"pre-rendered dataset ({', '.join(_PRERENDERED)}; prefix KIND:PATH to name it)."
    )
