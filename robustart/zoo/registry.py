"""The model zoo registry: plain data, no torch, nothing built until asked.

An entry carries everything a job needs to know about a model before it is built: its
architecture (a timm name), where its weights come from (HF hub, URL or an installed package,
with sha256 where known), its eval preprocessing (as timm's pretrained_cfg does), its parameter
count, its training-technique tags and its form: "fp", or a quantized / binarized form named after '@' (`efficientnet_lite0@w8a8`,
`resnet18@binary-irnet`; grammar in robustart/quant/qconfig.py), built from the fp weights.
"""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

FAMILIES = ("cnn", "transformer", "mixer", "nas")
FORMS = ("fp", "w8a8", "w6a6", "w4a8", "w4a4", "binary", "bwta")  # any wNaM (2..8 bits) is a form too

IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INCEPTION_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class UnknownModelError(KeyError):
    """Raised for a model name that is not in the registry; the message suggests close names."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0])


@dataclass(frozen=True)
class WeightSource:
    """Where an entry's checkpoint comes from. Exactly one of hf_hub_id, url, package is set."""

    hf_hub_id: str | None = None
    hf_filename: str = "model.safetensors"
    revision: str | None = None
    url: str | None = None
    # Full sha256 hex digest, or a prefix of at least 8 hex digits (torchvision-style file names).
    sha256: str | None = None
    # An installed Python package that ships the checkpoint, and the file inside it.
    package: str | None = None
    package_file: str | None = None
    # A checkpoint on local disk (a local entry, e.g. written by `robustart nas train`).
    file: str | None = None
    # How the checkpoint's keys map onto the timm architecture: "timm" (same keys) or
    # "by_order" (same tensors in the same order, other names; see zoo/weights.py).
    key_map: str = "timm"

    @property
    def kind(self) -> str:
        if self.package:
            return "package"
        if self.hf_hub_id:
            return "hf_hub"
        if self.url:
            return "url"
        if self.file:
            return "file"
        return "none"

    def describe(self) -> str:
        if self.package:
            return f"package {self.package}/{self.package_file}"
        if self.hf_hub_id:
            rev = f"@{self.revision}" if self.revision else ""
            return f"hf://{self.hf_hub_id}/{self.hf_filename}{rev}"
        if self.file:
            return f"file {self.file}"
        return self.url or "(no weights)"

    def package_path(self) -> Path | None:
        """The checkpoint's path inside its installed package, or None if not installed."""
        if not self.package:
            return None
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(list(spec.submodule_search_locations)[0]) / (self.package_file or "")
        return path if path.is_file() else None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    arch: str  # timm architecture name
    family: str  # cnn | transformer | mixer | nas
    weights: WeightSource
    input_size: tuple[int, int, int] = (3, 224, 224)
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = IMAGENET_MEAN_STD[0]
    std: tuple[float, ...] = IMAGENET_MEAN_STD[1]
    num_classes: int = 1000
    params: int = 0  # exact parameter count of the built network
    tags: tuple[str, ...] = ()
    form: str = "fp"
    timm_name: str | None = None  # the "arch.tag" these weights have in timm, if any
    license: str = ""
    paper: str = ""
    description: str = ""
    arch_kwargs: dict = field(default_factory=dict, hash=False, compare=False)
    # A quantized form's QuantConfig, or {"method": ...} of a binary form; None for fp.
    quant: object = field(default=None, hash=False, compare=False)

    def __post_init__(self) -> None:
        import re

        if self.family not in FAMILIES:
            raise ValueError(f"entry {self.name!r}: family {self.family!r} is not one of {FAMILIES}")
        if self.form not in FORMS and not re.fullmatch(r"w[2-8]a[2-8]", self.form):
            raise ValueError(f"entry {self.name!r}: form {self.form!r} is not one of {FORMS}")

    @property
    def spec(self) -> str:
        """The name that gives this entry back: `name`, or `name@form[:settings]`."""
        if self.form == "fp":
            return self.name
        if self.form == "binary":
            return f"{self.name}@binary-{self.quant['method']}"
        return f"{self.name}@{self.quant.spec()}"

    def quant_dict(self) -> dict | None:
        """The form's settings as JSON (for job keys), None for fp."""
        if self.quant is None:
            return None
        return dict(self.quant) if isinstance(self.quant, dict) else self.quant.to_dict()

    @property
    def data_config(self) -> dict:
        """Eval preprocessing in timm's data-config vocabulary."""
        return {
            "input_size": tuple(self.input_size),
            "crop_pct": self.crop_pct,
            "crop_mode": "center",
            "interpolation": self.interpolation,
            "mean": tuple(self.mean),
            "std": tuple(self.std),
        }

    def available_offline(self) -> bool:
        """True when the weights can be had without a network: shipped in a package or cached."""
        from robustart.zoo import weights  # local import: keeps the registry free of torch

        return weights.is_available_offline(self)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["weights"]["kind"] = self.weights.kind
        d["weights"]["source"] = self.weights.describe()
        d.pop("arch_kwargs", None)
        d["quant"] = self.quant_dict()
        return d


_REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry, *, replace: bool = False) -> ModelEntry:
    if entry.name in _REGISTRY and not replace:
        raise ValueError(f"a model named {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _ensure_loaded() -> None:
    if not _REGISTRY:
        from robustart.nas import entries as _nas  # noqa: F401  (the nas family)
        from robustart.zoo import entries  # noqa: F401  (registers the built-in entries)


def get_entry(name: str) -> ModelEntry:
    """The entry `name`; `NAME@FORM[:k=v,...]` is NAME's quantized or binarized form."""
    _ensure_loaded()
    if "@" in name:
        from dataclasses import replace

        from robustart.quant.qconfig import parse_form

        base, _, form_text = name.partition("@")
        entry = get_entry(base)
        if entry.form != "fp":
            raise UnknownModelError(f"model {name!r}: {base!r} is already a {entry.form} form; forms apply to fp models.")
        form, extra = parse_form(form_text, model=base)
        return replace(entry, form=form, quant=extra.get("quant") or {"method": extra["method"]})
    try:
        return _REGISTRY[name]
    except KeyError:
        local = _local_entry(name)
        if local is not None:
            return local
        close = difflib.get_close_matches(name, list(_REGISTRY) + list(_local_entry_files()), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownModelError(
            f"Unknown model {name!r}.{hint} `robustart zoo list` shows every model."
        ) from None


def list_entries(
    family: str | None = None,
    tags: Iterable[str] = (),
    offline: bool | None = None,
    pattern: str | None = None,
) -> list[ModelEntry]:
    """Entries in registry order, filtered by family, tags (all must match), offline availability
    and a shell-style name pattern."""
    import fnmatch

    _ensure_loaded()
    if family is not None and family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}; choose one of {', '.join(FAMILIES)}.")
    tags = tuple(tags)
    out = []
    for e in list(_REGISTRY.values()) + local_entries():
        if family and e.family != family:
            continue
        if any(t not in e.tags for t in tags):
            continue
        if pattern and not fnmatch.fnmatch(e.name, pattern):
            continue
        if offline is not None and e.available_offline() != offline:
            continue
        out.append(e)
    return out


def all_tags() -> list[str]:
    _ensure_loaded()
    return sorted({t for e in _REGISTRY.values() for t in e.tags})


# --------------------------------------------------------------------------- local entries
# A local entry is a JSON file (as `robustart nas train` writes) describing a model whose
# checkpoint is on local disk: `$ROBUSTART_HOME/zoo/<name>.json`, or any path ending in .json
# given as the model name. The checkpoint's sha256 is in the entry and is checked on load.


def _local_entry_files() -> dict[str, Path]:
    from robustart import settings

    folder = settings.home() / "zoo"
    return {p.stem: p for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def entry_from_json(path: str | Path) -> ModelEntry:
    """A ModelEntry from a local entry JSON; a relative weights file is relative to the JSON."""
    import json

    path = Path(path).expanduser()
    try:
        d = json.loads(path.read_text())
        w = dict(d.pop("weights"))
        file = w.get("file")
        if not file:
            raise ValueError("weights.file is missing")
        if not Path(file).is_absolute():
            w["file"] = str((path.parent / file).resolve())
        weights = WeightSource(file=w["file"], sha256=w.get("sha256"))
        kw = {k: d[k] for k in ("input_size", "mean", "std", "tags") if k in d}
        kw = {k: tuple(v) for k, v in kw.items()}
        known = {"name", "arch", "family", "crop_pct", "interpolation", "num_classes", "params", "license",
                 "paper", "description", "arch_kwargs"}
        kw.update({k: d[k] for k in known if k in d})
        return ModelEntry(weights=weights, **kw)
    except (OSError, ValueError, KeyError, TypeError) as e:
        from robustart.errors import RobustartError

        raise RobustartError(
            f"{path}: not a local model entry ({type(e).__name__}: {e}). `robustart nas train` writes one "
            "(entry.json next to model.safetensors)."
        ) from None


def _local_entry(name: str) -> ModelEntry | None:
    if name.endswith(".json") and Path(name).expanduser().is_file():
        return entry_from_json(name)
    path = _local_entry_files().get(name)
    return entry_from_json(path) if path is not None else None


def local_entries() -> list[ModelEntry]:
    out = []
    for name, path in _local_entry_files().items():
        try:
            out.append(entry_from_json(path))
        except Exception:  # a broken file in the folder must not hide the others
            continue
    return out
