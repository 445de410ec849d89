"""Benchmark plans: models x noises x one dataset, as a TOML file or inline options, expanded into
the exact jobs (keys) `robustart eval` makes, so every job already in the store counts.

A plan file (every key optional; inline options replace the file's values):

    models = ["efficientnet_lite*", "family:transformer", "resnet50@w8a8", "tag:adversarial-training"]
    preset = "robustart"                 # quick | robustart | a registered preset
    noises = ["pgd:eps=1/255"]           # added to the preset's
    seed = 0
    store = "results"                    # relative paths are relative to this file
    shard_size = 256
    batch_size = 64
    device = "cuda"

    [data]                               # or: data = "/data/imagenet/val"
    path = "/data/imagenet/val"
    root = "..."                         # a labels file's root (eval's --data-root)
    limit = 5000
    classes = "classes.txt"

    [executor]                           # how `robustart bench` runs it
    name = "ray"                         # local | ray | slurm
    workers = 8
    address = "auto"
    retries = 2
    # any other key is an option of that executor (partition, gpus_per_worker, time_min, ...)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from robustart.bench.presets import preset_noises
from robustart.bench.select import select_models, split_list
from robustart.data.sources import DataSource
from robustart.engine.plan import JobSpec, check_options, open_data
from robustart.engine.plan import plan as plan_model
from robustart.errors import RobustartError
from robustart.registry import did_you_mean
from robustart.results.store import ResultsStore
from robustart.zoo.registry import ModelEntry

TOP_KEYS = ("models", "noises", "preset", "data", "limit", "store", "shard_size", "batch_size", "seed", "device",
            "executor")
DATA_KEYS = ("path", "root", "limit", "classes")
EXECUTOR_KEYS = ("name", "workers", "address", "retries")


class PlanError(RobustartError):
    """A plan file or option that cannot be read as a plan."""


@dataclass
class ExecutorSettings:
    name: str = "local"
    workers: int | None = None
    address: str | None = None
    retries: int = 2
    options: dict = field(default_factory=dict)  # executor-specific (partition, num_gpus, ...)


@dataclass(frozen=True)
class Unkeyed:
    """A job planned offline whose key is unknown: its checkpoint is not here (nor its sha256
    pinned), and the key holds the checkpoint's sha256. It still counts in estimates."""

    entry: ModelEntry
    noise: dict
    spec: str  # the noise spec it came from
    n: int
    reason: str


@dataclass
class BenchPlan:
    """The jobs of a plan. `jobs` are exactly the JobSpecs `robustart eval` plans for the same
    model, data and noise (one call of robustart.engine.plan per model); `origin` maps each
    key to (model spec, noise spec it came from)."""

    jobs: list[JobSpec]
    models: list[ModelEntry]
    noises: list[str]
    store: ResultsStore
    data: dict
    settings: dict
    executor: ExecutorSettings
    path: Path | None = None
    preset: str | None = None
    offline: bool = False
    origin: dict = field(default_factory=dict)
    unkeyed: list[Unkeyed] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (model, why): chosen by a group, cannot run
    notes: list[str] = field(default_factory=list)  # what a suite leaves out here (ImageNet-S backends)

    @property
    def keys(self) -> list[str]:
        return [j.key for j in self.jobs]

    @property
    def n_jobs(self) -> int:
        return len(self.jobs) + len(self.unkeyed)

    def describe(self) -> str:
        what = f"{len(self.models)} model{'s' * (len(self.models) != 1)} x {len(self.noises)} noise spec" \
               f"{'s' * (len(self.noises) != 1)}"
        return f"{self.n_jobs} jobs ({what}) on {self.data['name']} (n={self.data['n']}), store {self.store.root}"


# --------------------------------------------------------------------------- reading a plan file


def read_plan_file(path: str | Path) -> dict:
    """The plan file's table; a file that is missing or not TOML is one error naming it (and the
    line, for a syntax error)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    path = Path(path)
    if not path.is_file():
        raise PlanError(f"plan {path}: no such file" + (" (it is a folder)" if path.is_dir() else "") +
                        "; give a plan .toml file, or the plan inline (--models, --noises or --preset, --data).")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PlanError(f"plan {path}: cannot read it ({getattr(e, 'strerror', None) or e}).") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PlanError(f"plan {path}: not valid TOML: {e}. The format is in README, "
                        "'Benchmarks at scale'.") from None


def _unknown_keys(table: dict, allowed, where: str) -> None:
    for k in table:
        if k not in allowed:
            raise PlanError(f"{where}: unknown key {k!r}.{did_you_mean(k, allowed)} Keys: {', '.join(allowed)}.")


def _int(value, name: str, where: str, lo: int = 0) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise PlanError(f"{where}: {name} must be a whole number >= {lo}, got {value!r}.")
    return value


def _str(value, name: str, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise PlanError(f"{where}: {name} must be a string, got {value!r}.")
    return value


def _strings(value, name: str, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PlanError(f"{where}: {name} must be a string or a list of strings, got {value!r}.")
    return split_list(value)


def _rel(value: str | None, base: Path | None, data: bool = False) -> str | None:
    """A path in a plan file, relative to the file's folder; `builtin` and `kind:path` data specs
    (imagenet-r:/data/x) are left as written."""
    if value is None or base is None:
        return value
    if data and (value == "builtin" or re.match(r"^[A-Za-z][\w-]+:", value)):
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


# --------------------------------------------------------------------------- load_plan


def load_plan(path: str | Path | None = None, *, models=None, noises=None, data=None, preset=None, limit=None,
              store=None, shard_size=None, batch_size=None, offline: bool = False, seed=None, device=None,
              data_root=None, classes=None, executor=None, workers=None, address=None, retries=None,
              options: dict | None = None, progress: bool = False) -> BenchPlan:
    """A plan from a TOML file and/or inline options (an inline option replaces the file's value).

    offline=True plans without a network or weights (for `--dry-run` and `bench status`): a
    job's key needs its checkpoint's sha256, taken from the entry's pin or the cached file; a
    model with neither gives `unkeyed` jobs (key unknown, still counted). Models a group or
    pattern selector chose that cannot be planned here (their labels do not fit the data, their
    weights are not available, a noise refuses them) are listed in `skipped` with the reason; a
    model named by itself that cannot be planned is an error."""
    where = "plan"
    file: dict = {}
    base = None
    if path is not None:
        file = read_plan_file(path)
        where, base = f"plan {path}", Path(path).resolve().parent
        _unknown_keys(file, TOP_KEYS, where)
    fdata = file.get("data")
    if isinstance(fdata, str):
        fdata = {"path": fdata}
    elif fdata is None:
        fdata = {}
    elif not isinstance(fdata, dict):
        raise PlanError(f"{where}: data must be a path or a table ([data] path = ...), got {fdata!r}.")
    _unknown_keys(fdata, DATA_KEYS, f"{where}: [data]")
    fexec = file.get("executor") or {}
    if isinstance(fexec, str):
        fexec = {"name": fexec}
    if not isinstance(fexec, dict):
        raise PlanError(f"{where}: executor must be a name or a table ([executor] name = ...), got {fexec!r}.")

    model_sel = split_list(models) if models else _strings(file.get("models"), "models", where)
    preset = preset or _str(file.get("preset"), "preset", where)
    extra_noises = split_list(noises) if noises else _strings(file.get("noises"), "noises", where)
    data_path = data if data is not None else _rel(_str(fdata.get("path"), "data.path", where), base, data=True)
    data_root = data_root if data_root is not None else _rel(_str(fdata.get("root"), "data.root", where), base)
    classes = classes if classes is not None else _rel(_str(fdata.get("classes"), "data.classes", where), base)
    limit = limit if limit is not None else _int(fdata.get("limit", file.get("limit")), "limit", where, 1)
    store = store if store is not None else _rel(_str(file.get("store"), "store", where), base)
    shard_size = shard_size if shard_size is not None else _int(file.get("shard_size"), "shard_size", where, 1)
    batch_size = batch_size if batch_size is not None else _int(file.get("batch_size"), "batch_size", where, 1)
    seed = seed if seed is not None else (_int(file.get("seed"), "seed", where) or 0)
    device = device if device is not None else _str(file.get("device"), "device", where)
    device = None if device in (None, "auto") else device
    check_options(batch_size=batch_size, shard_size=shard_size, limit=limit)
    if not model_sel:
        raise PlanError(f"{where}: no models; give models (names, NAME@FORM, family:NAME, tag:NAME or a pattern; "
                        "'*' is the whole zoo): `models = [...]` in the file, or --models.")

    ex = _executor(fexec, executor, workers, address, retries, options, where)

    gpu = _gpu(device)
    spec_list = (preset_noises(preset, gpu) if preset else []) + extra_noises
    spec_list = list(dict.fromkeys(spec_list))
    if not spec_list:
        raise PlanError(f"{where}: no noises; give a preset (--preset quick|robustart, `preset = ...`) or noise specs "
                        "(--noises clean,pgd, `noises = [...]`).")
    from robustart.noises import expand_noise, left_out

    counts = {s: len(expand_noise(s)) for s in spec_list}  # a bad spec fails here, before any model
    notes = [w for s in spec_list for w in left_out(s)]

    selected = select_models(model_sel)
    st = ResultsStore(store)
    if ex.name == "local" and not offline:
        from robustart.engine.env import resolve_device

        resolve_device(device)  # this machine runs the jobs: an unusable device fails now
    opened = open_data(data_path, data_root, limit, classes)
    source, samples = opened
    fingerprint = DataSource.fingerprint(samples)  # one stat per file, once for every model's jobs
    files_skipped = source.skipped_items()
    if files_skipped:
        notes.append(f"{len(files_skipped)} file(s) in dataset {source.name} were skipped (first: "
                     f"{files_skipped[0][0]}: {files_skipped[0][1]}); each job's meta.json lists them (`skipped`).")

    jobs: list[JobSpec] = []
    origin: dict = {}
    unkeyed: list[Unkeyed] = []
    skipped: list[tuple[str, str]] = []
    models_out: list[ModelEntry] = []
    seen: set[str] = set()
    for sel in selected:
        try:
            # the device is not part of a key: plan without it (a plan for a GPU cluster can be
            # made and checked on a machine without one), then give it to the jobs
            p = plan_model(sel.entry, data_path, noise=spec_list, limit=limit, batch_size=batch_size or 32,
                           store=st, shard_size=shard_size, seed=seed, data_root=data_root, classes=classes,
                           progress=progress, fetch_weights=not offline, opened=opened, fingerprint=fingerprint)
        except RobustartError as e:
            if sel.named:
                raise
            skipped.append((sel.entry.spec, str(e)))
            continue
        models_out.append(sel.entry)
        specs = [s for s in spec_list for _ in range(counts[s])]
        if p.unkeyed:
            why = _why_unkeyed(sel.entry)
            for cfg, spec in zip(p.unkeyed, specs):
                unkeyed.append(Unkeyed(sel.entry, cfg, spec, len(samples), why))
        for job, spec in zip(p.jobs, specs):
            if job.key in seen:  # the same job asked for twice (a preset and an explicit spec)
                continue
            seen.add(job.key)
            jobs.append(replace(job, device=device))
            origin[job.key] = (sel.entry.spec, spec)
    if not models_out:
        first = "; ".join(f"{m}: {why}" for m, why in skipped[:3])
        raise PlanError(f"{where}: none of the {len(skipped)} models the selectors chose can be planned here "
                        f"({first}{' ...' if len(skipped) > 3 else ''}).")
    data_info = {"path": data_path, "root": data_root, "limit": limit, "classes": classes, "name": source.name,
                 "kind": source.kind, "n": len(samples)}
    settings = {"seed": seed, "shard_size": shard_size, "batch_size": batch_size or 32, "device": device,
                "gpu": gpu}
    return BenchPlan(jobs, models_out, spec_list, st, data_info, settings, ex, Path(path) if path else None, preset,
                     offline, origin, unkeyed, skipped, notes)


def _why_unkeyed(entry: ModelEntry) -> str:
    if entry.weights.kind == "none":
        return "no published weights"
    return f"weights not fetched (`robustart zoo download {entry.name}`)"


def _gpu(device: str | None) -> bool:
    """Whether the jobs run on a CUDA device: named, or found here when the device is auto."""
    if device is not None:
        return str(device).startswith("cuda")
    import torch

    return torch.cuda.is_available()


def _executor(fexec: dict, name, workers, address, retries, options, where) -> ExecutorSettings:
    from robustart.bench.executors import EXECUTORS

    opts = {k: v for k, v in fexec.items() if k not in EXECUTOR_KEYS}
    opts.update(options or {})
    ex = ExecutorSettings(
        name=name or _str(fexec.get("name"), "executor.name", where) or "local",
        workers=workers if workers is not None else _int(fexec.get("workers"), "executor.workers", where, 1),
        address=address or _str(fexec.get("address"), "executor.address", where),
        retries=retries if retries is not None else _int(fexec.get("retries", 2), "executor.retries", where),
        options=opts,
    )
    if ex.name not in EXECUTORS:
        raise EXECUTORS.unknown(ex.name)
    if ex.workers is not None and ex.workers < 1:
        raise PlanError(f"--workers must be at least 1, got {ex.workers}.")
    if ex.retries < 0:
        raise PlanError(f"--retries must be 0 or more, got {ex.retries}.")
    if ex.address is None and os.environ.get("RAY_ADDRESS") and ex.name == "ray":
        ex.address = os.environ["RAY_ADDRESS"]
    return ex
