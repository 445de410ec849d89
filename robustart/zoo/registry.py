"""The model zoo registry: plain data, no torch, nothing built until asked.

An entry carries everything a job needs to know about a model before it is built: its
architecture (a timm name), where its weights come from (HF hub, URL or an installed package,
with sha256 where known), its eval preprocessing (as timm's pretrained_cfg does), its parameter
count, its training-technique tags and its form: "fp", or a quantized / binarized form named
after '@' (`efficientnet_lite0@w8a8`, `resnet18@binary-irnet`), built from the fp weights.

Three registries (robustart.registry) make the zoo extensible without it importing what extends
it: FAMILIES (model families: each registers its entries, and its own architectures with timm
when they are not timm's), ENTRIES (the models), and FORM_PROVIDERS (who parses and builds the
forms after '@': robustart.quant). The built-in families and the form provider are lines in
robustart/plugins.py.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from robustart.errors import RobustartError
from robustart.registry import Registry, did_you_mean

FORMS = ("fp", "w8a8", "w6a6", "w4a8", "w4a4", "binary", "bwta")  # any wNaM (2..8 bits) is a form too

IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INCEPTION_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class UnknownModelError(RobustartError, KeyError):
    """Raised for a model name that is not in the registry; the message suggests close names."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0])


@dataclass(frozen=True)
class ZooFamily:
    """A model family: a name entries carry (`ModelEntry.family`), the label reports and
    figures give it, and what its entries need that the zoo cannot know. The object is
    registered in FAMILIES; the module that defines it registers the family's entries (importing
    the module, which happens when the family is first looked up, is what loads them).

    architectures: a module path, or a function, that registers the family's architectures
                   with timm (`timm.models.register_model`) when they are not timm's own; run
                   the first time one of its entries is built.
    no_weights:    what a user should do when an entry has no weights ({name}: the entry)."""

    name: str
    label: str
    help: str = ""
    architectures: str | Callable[[], Any] | None = None
    no_weights: str = ""

    def load_architectures(self) -> None:
        if self.architectures is None:
            return
        if callable(self.architectures):
            self.architectures()
        else:
            import importlib

            importlib.import_module(self.architectures)


def _check_family(name, obj) -> None:
    if not isinstance(obj, ZooFamily) or obj.name != name:
        raise TypeError(f"zoo family {name!r} must be a robustart.zoo.registry.ZooFamily named {name!r}, got {obj!r}")


FAMILIES = Registry("zoo family", "zoo_families", error=ValueError, check=_check_family,
                    message="Unknown family {name!r}.{hint} Choose one of {names}.")

# Who parses and builds model forms (`NAME@<form>`): an object with parse(text, model) ->
# (form, settings), check_backend(entry, backend), calibration(entry, source), build(model,
# entry, calibration=, backend=, progress=) (robustart.quant.forms.QuantForms).
FORM_PROVIDERS = Registry("model form provider", "model_forms")


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
    family: str  # a registered zoo family: cnn | transformer | mixer | nas | ...
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
            raise ValueError(f"entry {self.name!r}: family {self.family!r} is not one of {tuple(FAMILIES)}")
        if self.form not in FORMS and not re.fullmatch(r"w[2-8]a[2-8]", self.form):
            raise ValueError(f"entry {self.name!r}: form {self.form!r} is not one of {FORMS}")

    @property
    def spec(self) -> str:
        """The name that gives this entry back: `name`, or `name@form[:settings]`."""
        if self.form == "fp":
            return self.name
        if self.form == "binary":
            return f"{self.name}@binary-{self.quant['method']}"
        if isinstance(self.quant, dict):  # a local entry of a trained form (bwta): its settings are its checkpoint's
            return f"{self.name}@{self.form}"
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


def _check_entry(name, obj) -> None:
    if not isinstance(obj, ModelEntry):
        raise TypeError(f"zoo entry {name!r} must be a ModelEntry, got {obj!r}")


ENTRIES = Registry("model", error=UnknownModelError, check=_check_entry)


def register(entry: ModelEntry, *, replace: bool = False) -> ModelEntry:
    return ENTRIES.register(entry.name, entry, replace=replace)


def unregister(name: str) -> None:
    ENTRIES.unregister(name)


def _ensure_loaded() -> None:
    """Look every family up once: the module defining it registers its entries."""
    for name in FAMILIES.names():
        FAMILIES.get(name)


def family(name: str) -> ZooFamily:
    return FAMILIES.get(name)


def family_label(name: str) -> str:
    """How reports name a family ("CNN"); the name itself for one not registered (an old store)."""
    return FAMILIES.get(name).label if name in FAMILIES else str(name)


def form_provider(form: str | None = None):
    """The form provider (robustart.quant's, unless a package registers another): the one that
    claims `form`, or the only one."""
    providers = FORM_PROVIDERS.values()
    if not providers:
        raise UnknownModelError("no model forms here: robustart.quant is not installed.")
    if form is None or len(providers) == 1:
        return providers[0]
    for p in providers:
        if p.claims(form):
            return p
    raise UnknownModelError(f"no form provider knows the form {form!r}.")


def get_entry(name: str) -> ModelEntry:
    """The entry `name`; `NAME@FORM[:k=v,...]` is NAME's quantized or binarized form."""
    _ensure_loaded()
    if "@" in name:
        from dataclasses import replace

        base, _, form_text = name.partition("@")
        entry = get_entry(base)
        if entry.form != "fp":
            raise UnknownModelError(f"model {name!r}: {base!r} is already a {entry.form} form; forms apply to fp models.")
        form, settings = form_provider(form_text).parse(form_text, model=base)
        return replace(entry, form=form, quant=settings)
    if name in ENTRIES:
        return ENTRIES.get(name)
    local = _local_entry(name)
    if local is not None:
        return local
    hint = did_you_mean(name, ENTRIES.names() + list(_local_entry_files()), n=3)
    raise UnknownModelError(f"Unknown model {name!r}.{hint} `robustart zoo list` shows every model.")


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
        raise FAMILIES.unknown(family)
    tags = tuple(tags)
    out = []
    for e in ENTRIES.values() + local_entries():
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
    return sorted({t for e in ENTRIES.values() for t in e.tags})


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
        weights = WeightSource(file=w["file"], sha256=w.get("sha256"), key_map=w.get("key_map", "timm"))
        kw = {k: d[k] for k in ("input_size", "mean", "std", "tags") if k in d}
        kw = {k: tuple(v) for k, v in kw.items()}
        if d.get("form", "fp") != "fp":  # a trained form (binarized, bwta): its checkpoint is the form's
            kw["form"] = d["form"]
            kw["quant"] = {**dict(d["quant"]), "trained": True}
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
