"""Planning: a model, a dataset and a noise spec -> job specs, each with its key and shard
layout. Nothing is built here: the checkpoint is fetched and hashed (its sha256 is part of the
key) but no weights are loaded, and each noise's `check` refuses what it cannot run before any
model exists.

A `JobSpec` is plain, picklable data: `robustart.engine.execute(job, shards)` runs any subset
of a job's shards from it, in this process or another one (a pool, Ray, Slurm).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from robustart.data.sources import DataSource, Sample, open_source
from robustart.errors import DataError, RobustartError
from robustart.results.store import ResultsStore, stable_hash
from robustart.zoo.registry import ModelEntry, get_entry

DEFAULT_SHARD_SIZE = 256
PRECISIONS = ("fp32",)


@dataclass(frozen=True)
class JobSpec:
    """One job: model entry x noise config x dataset x precision, keyed by the hash of `config`.

    The dataset is named by its spec (`data`, `data_root`, `limit`, as `evaluate` takes them)
    and reopened where the job runs; `fingerprint` must match there. `weights` is the
    checkpoint's (path, sha256) as verified when planned."""

    key: str
    config: dict
    entry: ModelEntry
    data: str | None
    data_root: str | None
    limit: int | None
    n: int
    fingerprint: str
    shard_size: int
    store: str
    weights: tuple[str, str]
    seed: int = 0
    batch_size: int = 32
    workers: int | None = None
    device: str | None = None
    backend: str = "fake"
    precision: str = "fp32"
    data_sha256: str | None = None  # the samples' content hash, with verify_data (checked on reuse)
    classes: str | None = None  # an ImageFolder's class map (--classes)

    @property
    def noise(self) -> dict:
        return self.config["noise"]

    @property
    def n_shards(self) -> int:
        return (self.n + self.shard_size - 1) // self.shard_size

    def shard_bounds(self, index: int) -> tuple[int, int]:
        """Sample positions [start, stop) of shard `index`."""
        return index * self.shard_size, min(self.n, (index + 1) * self.shard_size)


@dataclass
class Plan:
    """The jobs of one model x dataset x noise spec, and what planning opened (reused when the
    jobs run in this process)."""

    jobs: list[JobSpec]
    entry: ModelEntry
    source: DataSource
    samples: list[Sample]
    calibration: object = None  # a quantized form's calibration images (robustart.quant.forms.CalibSet)
    # Planned with fetch_weights=False and the checkpoint is not here: the noise configs whose
    # key is unknown until it is fetched (`jobs` is then empty).
    unkeyed: list[dict] = field(default_factory=list)


def job_config(entry: ModelEntry, weights_sha256: str | None, noise: dict, source: DataSource,
               samples: list[Sample], precision: str, seed: int = 0, backend: str = "fake",
               calibration: dict | None = None, fingerprint: str | None = None) -> dict:
    """The config whose hash is the job's key: every setting that can change a result.
    `fingerprint`: the samples' DataSource.fingerprint, when the caller has it (one stat per
    file: a suite of many jobs on a large dataset computes it once)."""
    import robustart

    config = {
        "model": {
            "name": entry.name,
            "arch": entry.arch,
            "family": entry.family,
            "form": entry.form,
            "timm_name": entry.timm_name,
            "weights": entry.weights.describe(),
            "preprocessing": {k: list(v) if isinstance(v, tuple) else v for k, v in entry.data_config.items()},
        },
        "weights_sha256": weights_sha256,
        "noise": noise,
        "dataset": {
            "kind": source.kind,
            "name": source.name,
            "n": len(samples),
            "fingerprint": fingerprint or DataSource.fingerprint(samples),
        },
        "precision": precision,
        "robustart": robustart.__version__,
    }
    if noise["name"] != "clean":  # a noise may draw random numbers: its seed changes results
        config["seed"] = seed
    if source.class_subset is not None:  # ImageNet-A/R: the model answers among these classes
        config["dataset"]["class_subset"] = list(source.class_subset)
    if entry.form != "fp":  # a quantized / binarized form: its settings, calibration and backend
        config["model"]["quant"] = entry.quant_dict()
        if calibration is not None:
            config["model"]["calibration"] = calibration
        config["backend"] = backend
        if backend != "fake":  # integer kernels have no gradients: attacks use the fake model's
            config["gradients"] = "fake"
    return config


# Numeric options: (name as the CLI spells it, smallest value, largest sensible value).
_LIMITS = {"batch_size": ("--batch-size", 1, 1 << 20), "shard_size": ("--shard-size", 1, 1 << 24),
           "workers": ("--workers", 0, 1024), "limit": ("--limit", 1, 1 << 40)}


def check_options(**values) -> None:
    """Refuse a numeric option out of range (None: its default), before anything is written."""
    for name, value in values.items():
        if value is None:
            continue
        flag, lo, hi = _LIMITS[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise RobustartError(f"{flag} must be a whole number, got {value!r}.")
        if not lo <= value <= hi:
            raise RobustartError(f"{flag} must be between {lo} and {hi}, got {value}.")


def stored_shard_size(store: ResultsStore, key: str) -> int | None:
    """The shard size of a job already in the store (a job keeps its layout), if readable."""
    try:
        meta = store.read_meta(key)
    except RobustartError:
        return None  # a damaged job: started over with this run's layout
    layout = (meta or {}).get("layout")
    try:
        return int(layout["shard_size"]) if isinstance(layout, dict) and int(layout["shard_size"]) >= 1 else None
    except (KeyError, TypeError, ValueError):
        return None


def content_hash(samples: list[Sample]) -> str:
    """Hash of every sample file's bytes (with its id and label): what `verify_data` checks."""
    import hashlib

    from robustart.results.store import file_sha256

    h = hashlib.sha256()
    for s in samples:
        try:
            digest = file_sha256(s.path)
        except OSError as e:
            digest = f"unreadable: {e.strerror}"
        h.update(f"{s.id}\0{s.label}\0{digest}\n".encode())
    return h.hexdigest()[:16]


def open_data(data, data_root, limit, classes=None) -> tuple[DataSource, list[Sample]]:
    source = open_source(data, root=data_root, classes=classes)
    samples = source.take(limit)
    if not samples:
        raise DataError(f"dataset {source.name} has no samples to evaluate (limit={limit}).")
    return source, samples


def check_labels(entry: ModelEntry, source: DataSource, samples: list[Sample]) -> None:
    """Every label is one of the model's classes (a labels file can name any index)."""
    bad = next((s for s in samples if not 0 <= s.label < entry.num_classes), None)
    if bad is not None:
        raise DataError(f"dataset {source.name}: sample {bad.id!r} has label {bad.label}, but model {entry.name!r} "
                        f"has {entry.num_classes} classes (0..{entry.num_classes - 1}); fix the label.")


def plan(
    model: str | ModelEntry = "efficientnet_lite0",
    data: str | Path | None = None,
    *,
    noise: str | dict | list = "clean",
    limit: int | None = None,
    batch_size: int = 32,
    device: str | None = None,
    workers: int | None = None,
    store: str | Path | ResultsStore | None = None,
    force: bool = False,
    shard_size: int | None = None,
    seed: int = 0,
    precision: str = "fp32",
    data_root: str | Path | None = None,
    progress: bool = True,
    backend: str = "fake",
    verify_data: bool = False,
    classes: str | Path | None = None,
    fetch_weights: bool = True,
    opened: tuple[DataSource, list[Sample]] | None = None,
    fingerprint: str | None = None,
) -> Plan:
    """The jobs of a noise spec (several for a suite) on one model and dataset: their configs,
    keys and shard layouts. A job that exists in the store keeps its shard size (so it resumes)
    unless `force` starts it over. Takes the arguments of `robustart.evaluate`; `verify_data`
    also hashes every sample file's contents (a job computed from other bytes is recomputed).

    fetch_weights=False plans without a network: the key's weights sha256 is the one the entry
    pins, or the cached checkpoint's (robustart.zoo.weights.known_sha256), the same keys a
    fetching plan gives; with neither, the configs are returned in `unkeyed` and `jobs` is
    empty. `opened`: the dataset's (source, samples) already opened from the same arguments,
    and `fingerprint` their fingerprint (a plan over many models opens and stats it once)."""
    from robustart.engine.env import resolve_device
    from robustart.noises import expand_noise, family_for
    from robustart.zoo.build import calibration_for, check_backend, verified_weights

    check_options(batch_size=batch_size, shard_size=shard_size, workers=workers, limit=limit)
    if precision not in PRECISIONS:
        raise RobustartError(f"--precision {precision!r} is not supported yet; choose from {PRECISIONS}.")
    configs = expand_noise(noise)
    entry = model if isinstance(model, ModelEntry) else get_entry(model)
    check_backend(entry, backend)
    source, samples = opened if opened is not None else open_data(data, data_root, limit, classes)
    check_labels(entry, source, samples)
    resolve_device(device)  # an unusable device fails here, before anything runs
    store = store if isinstance(store, ResultsStore) else ResultsStore(store)
    if fetch_weights:
        path, sha = verified_weights(entry, progress=progress)
    else:
        from robustart.zoo.weights import known_sha256

        path, sha = known_sha256(entry)
    calib = calibration_for(entry, source)
    fingerprint = fingerprint or DataSource.fingerprint(samples)
    data_sha256 = content_hash(samples) if verify_data else None
    jobs, unkeyed = [], []
    for cfg in configs:
        fam = family_for(cfg)
        cfg = fam.resolve(cfg, source)  # e.g. precision:w8a8: its calibration images' fingerprint
        n = fam.build(cfg)
        if n is not None:
            n.check(entry, source)
            if n.loader is not None and source.read is not None:
                raise DataError(f"noise {cfg['name']!r} decodes image files; dataset {source.name} is in memory "
                                "and has none. Use it with an image-file dataset.")
        if sha is None:  # offline, checkpoint not here: the key is unknown
            unkeyed.append(cfg)
            continue
        config = job_config(entry, sha, cfg, source, samples, precision, seed, backend,
                            calib.describe() if calib is not None else None, fingerprint)
        key = stable_hash(config)
        size = stored_shard_size(store, key) if not force else None
        size = size or int(shard_size or DEFAULT_SHARD_SIZE)
        jobs.append(JobSpec(
            key=key, config=config, entry=entry, data=None if data is None else str(data),
            data_root=None if data_root is None else str(data_root), limit=limit, n=len(samples),
            fingerprint=fingerprint, shard_size=size, store=str(store.root), weights=(str(path) if path else "", sha), seed=seed,
            batch_size=batch_size, workers=workers, device=device, backend=backend, precision=precision,
            data_sha256=data_sha256,
            classes=None if classes is None else str(classes),
        ))
    return Plan(jobs, entry, source, samples, calib, unkeyed)
