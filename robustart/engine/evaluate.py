"""The evaluation engine: one job = model entry x noise config x dataset x precision.

It writes per-sample records in shards to the results store and nothing else; metrics are
computed from the records afterwards. A finished job is reused; an interrupted one resumes from
its first missing shard.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from robustart.data.decode import BadImageError, load_rgb
from robustart.data.sources import DataSource, Sample, open_source
from robustart.errors import DataError, RobustartError
from robustart.noises import parse_noise
from robustart.results import metrics as M
from robustart.results.store import ResultsStore, stable_hash
from robustart.zoo.registry import ModelEntry, get_entry

DEFAULT_SHARD_SIZE = 256
PRECISIONS = ("fp32",)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def record_schema(noise=None):
    """Per-sample record columns: the base ones, then for a noise job the model's clean
    prediction on the same sample and the noise family's own columns."""
    import pyarrow as pa

    fields = [
        ("sample_id", pa.string()),
        ("label", pa.int32()),
        ("pred", pa.int32()),
        ("top5", pa.list_(pa.int32())),
        ("correct", pa.bool_()),
        ("prob", pa.float32()),  # softmax probability of the true class
        ("margin", pa.float32()),  # true-class logit minus the largest other logit
        ("status", pa.string()),  # "ok" or "failed"
        ("error", pa.string()),  # why a sample failed
        ("note", pa.string()),  # conversions applied while decoding (e.g. from CMYK)
    ]
    if noise is not None:
        fields += [("clean_pred", pa.int32()), ("clean_correct", pa.bool_())] + list(noise.fields)
    return pa.schema(fields)


class _ImageDataset(torch.utils.data.Dataset):
    """Decode + eval transform; a bad file yields its reason instead of an image. With a
    noise's `loader` (e.g. another decoder and resizer), each item also carries the noise's own
    image of the sample (or the reason it could not be made)."""

    def __init__(self, samples: list[Sample], indices: list[int], transform, loader=None, read=None):
        self.samples = samples
        self.indices = indices
        self.transform = transform
        self.loader = loader
        self.read = read  # in-memory datasets: sample -> uint8 CHW tensor (no file to decode)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        i = self.indices[j]
        try:
            if self.read is not None:
                img, note = self.read(self.samples[i]), ""
            else:
                img, note = load_rgb(self.samples[i].path)
            x = self.transform(img)
        except BadImageError as e:
            return i, None, str(e), "", None
        except Exception as e:  # a transform failing on an odd image must not end the run
            return i, None, f"{type(e).__name__}: {e}", "", None
        if self.loader is None:
            return i, x, "", note, None
        try:
            return i, x, "", note, self.loader(self.samples[i].path)
        except Exception as e:  # the noise's pipeline failing on one file fails that sample only
            return i, None, f"{type(e).__name__} in the noise's image pipeline: {e}", note, None


def entry_transform(entry, source: DataSource | None = None):
    from robustart.data.transforms import array_transform, eval_transform

    if source is not None and source.read is not None:  # in-memory images: the entry's geometry, no crop
        return array_transform(entry)
    return eval_transform(entry)


def _collate(batch):
    return batch


def _forward(model, x: torch.Tensor, predict=None) -> torch.Tensor:
    """Logits (through a noise's own `predict`, e.g. at another precision, when given); on CUDA
    out-of-memory, retry in halves instead of failing the job."""
    try:
        return predict(model, x) if predict is not None else model(x)
    except torch.cuda.OutOfMemoryError:
        if x.shape[0] == 1:
            raise
        torch.cuda.empty_cache()
        h = x.shape[0] // 2
        return torch.cat([_forward(model, x[:h], predict), _forward(model, x[h:], predict)])


class _SubsetModel(torch.nn.Module):
    """A 1000-class model restricted to a dataset's class subset (ImageNet-A/R: 200 classes):
    logits of those classes only, so attacks and softmax see the same task the dataset poses."""

    def __init__(self, model, subset):
        super().__init__()
        self.model = model
        self.register_buffer("subset", torch.as_tensor(subset, dtype=torch.long))

    def forward(self, x):
        return self.model(x).index_select(1, self.subset.to(x.device))


def _outcome(logits: torch.Tensor, labels: torch.Tensor):
    """pred, top5, true-class probability and margin per row; labels must be in range."""
    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
    true_logit = logits.gather(1, labels[:, None])[:, 0]
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    prob = logits.softmax(1).gather(1, labels[:, None])[:, 0]
    return top5.cpu(), prob.cpu(), (true_logit - other).cpu()


def batch_records(model, batch, samples: list[Sample], device, noise=None, seed: int = 0,
                  subset=None, clean_cache: dict | None = None) -> list[dict]:
    """Per-sample records for one batch of (index, uint8 image | None, error, note).

    With a noise: the clean logits are computed once (or taken from `clean_cache`, shared by the
    jobs of a suite), the noise makes its batch, and the model's predictions on it are recorded
    beside the clean prediction. `subset`: class indices the model is restricted to."""
    rows = {}
    good = []
    extra_cols = [name for name, _ in noise.fields] if noise is not None else []

    def failed(s, note, err):
        row = {"sample_id": s.id, "label": s.label, "note": note, "pred": -1, "top5": [], "correct": False,
               "prob": float("nan"), "margin": float("nan"), "status": "failed", "error": err}
        if noise is not None:
            row.update({"clean_pred": -1, "clean_correct": False}, **{c: None for c in extra_cols})
        return row

    to_pos = {c: k for k, c in enumerate(subset)} if subset is not None else None
    variants = {}
    for i, x, err, note, xv in batch:
        s = samples[i]
        if x is None:
            rows[i] = failed(s, note, err)
        elif to_pos is not None and s.label not in to_pos:
            rows[i] = failed(s, note, f"label {s.label} is not among the dataset's {len(to_pos)} classes")
        else:
            good.append((i, x, note))
            variants[i] = xv
    if good:
        xb = torch.stack([x for _, x, _ in good]).to(device, non_blocking=True).float().div_(255.0)
        ids = [samples[i].id for i, _, _ in good]
        labels = [samples[i].label for i, _, _ in good]
        labels = torch.tensor([to_pos[lab] for lab in labels] if to_pos else labels, device=xb.device)
        cached = [clean_cache.get(sid) for sid in ids] if clean_cache is not None and noise is not None else None
        if cached is not None and all(c is not None for c in cached):
            clean_logits = torch.stack(cached).to(xb.device)
        else:
            with torch.inference_mode():
                clean_logits = _forward(model, xb).float()
            if clean_cache is not None and noise is not None:
                clean_cache.update(zip(ids, clean_logits.cpu()))
        n_cls = clean_logits.shape[1]
        in_range = labels < n_cls
        lab = labels.clamp(max=n_cls - 1)
        extras: dict = {}
        if noise is None:
            logits = clean_logits
        else:
            if noise.loader is not None:  # the noise's own images of these samples, as floats
                xv = torch.stack([variants[i] for i, _, _ in good]).to(xb.device).float().div_(255.0)
                out = noise.apply(model, xb, lab, ids, clean_logits, seed, variant=xv)
            else:
                out = noise.apply(model, xb, lab, ids, clean_logits, seed)
            with torch.inference_mode():
                logits = _forward(model, out.x, noise.predict).float()
            extras = noise.complete(out.extras, clean_logits, logits, lab)
            clean_pred = clean_logits.argmax(1).cpu()
        top5, prob, margin = _outcome(logits, lab)
        back = (lambda k: subset[k]) if subset is not None else (lambda k: k)
        for k, (i, _, note) in enumerate(good):
            s = samples[i]
            if not bool(in_range[k]):
                rows[i] = failed(s, note, f"label {s.label} is outside the model's {n_cls} classes")
                continue
            t5 = [back(c) for c in top5[k].tolist()]
            rows[i] = {"sample_id": s.id, "label": s.label, "pred": t5[0], "top5": t5,
                       "correct": t5[0] == s.label, "prob": float(prob[k]), "margin": float(margin[k]),
                       "status": "ok", "error": "", "note": note}
            if noise is not None:
                cp = back(int(clean_pred[k]))
                rows[i].update(clean_pred=cp, clean_correct=cp == s.label,
                               **{c: extras[c][k] for c in extra_cols})
    return [dict(rows[i], _index=i) for i in sorted(rows)]


@dataclass
class JobResult:
    key: str
    store: ResultsStore
    meta: dict
    reused: bool = False
    _records: object = field(default=None, repr=False)

    @property
    def records(self):
        if self._records is None:
            self._records = self.store.read_records(self.key)
        return self._records

    @property
    def metrics(self) -> dict:
        return M.noise_summary(self.records)

    def to_json(self) -> dict:
        cfg = self.meta["config"]
        m = self.metrics
        core = ("top1", "top5", "clean_top1", "ar", "asr", "flip_rate", "mean_pert_norm", "max_pert_linf",
                "zero_grad_share", "no_loss_gain_share")
        return {
            "key": self.key,
            "model": cfg["model"]["name"],
            "noise": cfg["noise"]["name"],
            "noise_config": cfg["noise"],
            "dataset": cfg["dataset"]["name"],
            "n": m["n"],
            "n_failed": m["n_failed"],
            "precision": cfg["precision"],
            "form": cfg["model"].get("form", "fp"),
            "backend": cfg.get("backend"),
            "metrics": {k: m[k] for k in core if k in m},
            "checks": self.meta.get("checks", {}),
            "reused": self.reused,
            "store": str(self.store.root),
        }


def job_config(entry: ModelEntry, weights_sha256: str | None, noise: dict, source: DataSource,
               samples: list[Sample], precision: str, seed: int = 0, backend: str = "fake",
               calibration: dict | None = None) -> dict:
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
            "fingerprint": DataSource.fingerprint(samples),
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


def _progress_bar(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


@dataclass
class _Run:
    """What the jobs of one `evaluate` / `evaluate_suite` call share: the model (built once, on
    first need), the dataset listing and the clean logits per sample (for the jobs of a suite)."""

    entry: ModelEntry
    source: DataSource
    samples: list[Sample]
    dev: torch.device
    store: ResultsStore
    weights_path: Path
    weights_sha: str
    batch_size: int
    workers: int | None
    shard_size: int | None
    seed: int
    precision: str
    progress: bool
    backend: str = "fake"
    calib: object = None  # the calibration images of a quantized form (robustart.quant.forms.CalibSet)
    model: object = None
    clean_cache: dict = field(default_factory=dict)

    def zoo_model(self):
        if self.model is None:
            from robustart.zoo.build import ZooModel, build_network, load_weights_into

            torch.manual_seed(self.seed)
            net = build_network(self.entry)
            load_weights_into(net, self.entry, self.weights_path)
            self.model = ZooModel(net, self.entry, self.weights_sha).to(self.dev).eval()
            if self.entry.form == "binary":
                from robustart.quant.forms import binarize_zoo_model

                self.model = binarize_zoo_model(self.model, self.entry.quant["method"]).to(self.dev)
            elif self.entry.form == "bwta":
                from robustart.quant.bwta import bwta_zoo_model

                self.model = bwta_zoo_model(self.model, self.entry.quant, self.calib, backend=self.backend).to(self.dev)
            elif self.entry.form != "fp":
                from robustart.quant.forms import quantize_zoo_model

                self.model = quantize_zoo_model(self.model, self.entry.quant, self.calib, backend=self.backend,
                                                progress=self.progress)
            if self.source.class_subset is not None:
                self.model = _SubsetModel(self.model, self.source.class_subset).to(self.dev).eval()
        return self.model


def _prepare(model, data, *, limit, batch_size, device, workers, store, shard_size, seed, precision,
             data_root, progress, backend="fake") -> _Run:
    from robustart.engine.env import resolve_device
    from robustart.zoo import weights as W

    if batch_size < 1:
        raise RobustartError(f"--batch-size must be >= 1, got {batch_size}")
    if precision not in PRECISIONS:
        raise RobustartError(f"--precision {precision!r} is not supported yet; choose from {PRECISIONS}.")
    entry = model if isinstance(model, ModelEntry) else get_entry(model)
    calib = _check_backend(entry, backend)
    source = open_source(data, root=data_root)
    samples = source.take(limit)
    if not samples:
        raise DataError(f"dataset {source.name} has no samples to evaluate (limit={limit}).")
    dev = resolve_device(device)
    store = store if isinstance(store, ResultsStore) else ResultsStore(store)

    weights_path = W.fetch(entry, progress=progress)
    weights_sha = W.file_sha256(weights_path)
    if not W.sha256_matches(weights_sha, entry.weights.sha256):
        raise W.ChecksumError(
            f"model {entry.name!r}: checkpoint {weights_path} has sha256 {weights_sha}, expected "
            f"{entry.weights.sha256}. Delete it and download again (`robustart zoo download {entry.name} --force`)."
        )
    if calib:
        from robustart.quant.forms import calibration_set

        calib = calibration_set(entry.quant, source)
    return _Run(entry, source, samples, dev, store, weights_path, weights_sha, batch_size, workers, shard_size,
                seed, precision, progress, backend, calib or None)


def _check_backend(entry: ModelEntry, backend: str) -> bool:
    """Validate --backend for the entry's form; True when the form needs calibration images."""
    from robustart.quant import backends as B

    B.check_backend(backend)
    if entry.form == "fp":
        if backend != "fake":
            raise RobustartError(f"--backend {backend} runs quantized forms; {entry.name!r} is fp. Name a form, "
                                 f"e.g. --model {entry.name}@w8a8, or compare backends with --noise precision:w8a8.")
        return False
    if entry.form == "binary":
        if backend != "fake":
            raise RobustartError(f"--backend {backend}: binary forms run as their own modules (--backend fake).")
        return False
    if entry.form == "bwta":
        from robustart.quant.bwta import FAMILIES

        if entry.family not in FAMILIES:
            raise RobustartError(f"model {entry.spec!r}: bwta forms are for transformer and mixer models; "
                                 f"{entry.name!r} is a {entry.family}. Use a binary form (e.g. @binary-irnet) for CNNs.")
        if backend not in ("fake", "triton"):
            raise RobustartError(f"--backend {backend}: bwta forms run on fake (simulation) or triton (the BWTA kernel).")
    why = B.unavailable(backend)
    if why:
        raise RobustartError(f"--backend {backend} cannot run here: {why}.")
    return True


def evaluate(
    model: str | ModelEntry = "efficientnet_lite0",
    data: str | Path | None = None,
    *,
    noise: str | dict = "clean",
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
) -> JobResult:
    """Run (or reuse, or resume) one job and return its result handle. A suite spec (e.g.
    `adversarial`, `imagenet-c`) is an error here: use `evaluate_suite`."""
    noise_cfg = parse_noise(noise)
    run = _prepare(model, data, limit=limit, batch_size=batch_size, device=device, workers=workers, store=store,
                   shard_size=shard_size, seed=seed, precision=precision, data_root=data_root, progress=progress,
                   backend=backend)
    return _run_job(run, noise_cfg, force)


@dataclass
class SuiteResult:
    """The jobs of one noise spec (one job for a single noise), and suite metrics over them."""

    jobs: list[JobResult]
    metrics: dict
    spec: str = ""

    def to_json(self) -> dict:
        """One object: `metrics.top1` is the suite's headline accuracy (WCAR for an attack suite,
        else the mean top-1 over its jobs), `clean_top1` the shared clean accuracy; every job's
        own JSON is under `jobs`."""
        import numpy as np

        first = self.jobs[0].to_json()
        out = {k: first[k] for k in ("model", "dataset", "n", "precision", "store")}
        metrics = {"top1": self.metrics.get("wcar", float(np.mean([j.metrics["top1"] for j in self.jobs])))}
        clean = [j.metrics["clean_top1"] for j in self.jobs if "clean_top1" in j.metrics]
        if clean:
            metrics["clean_top1"] = clean[0]
        metrics.update(self.metrics)
        out.update(noise=self.spec, metrics=metrics, jobs=[j.to_json() for j in self.jobs])
        return out


def evaluate_suite(
    model: str | ModelEntry = "efficientnet_lite0",
    data: str | Path | None = None,
    *,
    noise: str | dict | list = "clean",
    force: bool = False,
    **kwargs,
) -> SuiteResult:
    """Every job of a noise spec (a suite such as `adversarial` or `imagenet-c` has several), on
    one model and dataset: the model is built once and each sample's clean forward pass is shared
    by all jobs. Suite metrics (WCAR, mCE, ...) are computed from the jobs' records. Takes the
    keyword arguments of `evaluate`."""
    from robustart.noises import expand_noise, summarize

    unknown = sorted(set(kwargs) - set(_DEFAULTS))
    if unknown:
        raise TypeError(f"evaluate_suite() got unexpected keyword argument(s) {unknown}")
    configs = expand_noise(noise)
    run = _prepare(model, data, **{**_DEFAULTS, **kwargs})
    jobs = [_run_job(run, cfg, force) for cfg in configs]
    metrics = summarize(jobs) if len(jobs) > 1 else {}
    if run.source.kind == "imagenet-c":  # the released ImageNet-C files: one job, cells by path
        metrics.update(_prerendered_corruption_metrics(jobs))
    return SuiteResult(jobs, metrics, spec=noise if isinstance(noise, str) else "")


def _prerendered_corruption_metrics(jobs) -> dict:
    """mCE and friends of a clean run over pre-rendered ImageNet-C folders (sample ids are
    `<corruption>/<severity>/...`). Relative mCE needs a clean error from an ImageNet val run."""
    from robustart.noises.corruptions import metrics as CM

    out = {}
    for j in jobs:
        if j.meta["config"]["noise"]["name"] != "clean":
            continue
        s = CM.summary(CM.error_table(CM.prerendered_cells(j.records)), None)
        out.update({k: s[k] for k in ("mce", "mean_corruption_error") if s.get(k) is not None})
        if "note" in s:
            out["corruption_note"] = s["note"]
        out.update(corruption_errors=s["corruption_error"], ce=s["ce"])
    return out


_DEFAULTS = dict(limit=None, batch_size=32, device=None, workers=None, store=None, shard_size=None, seed=0,
                 precision="fp32", data_root=None, progress=True, backend="fake")


def _run_job(run: _Run, noise_cfg: dict, force: bool) -> JobResult:
    from robustart.engine.env import device_info, git_info, versions
    from robustart.noises import build_noise

    entry, source, samples, dev, store, seed = run.entry, run.source, run.samples, run.dev, run.store, run.seed
    batch_size, workers = run.batch_size, run.workers
    noise_calib = None
    if noise_cfg.get("name") == "precision" and "form" in noise_cfg:  # precision:w8a8 calibrates its own form
        from robustart.noises import quantized as NQ

        noise_cfg, noise_calib = NQ.with_calibration(noise_cfg, source)
    config = job_config(entry, run.weights_sha, noise_cfg, source, samples, run.precision, seed, run.backend,
                        run.calib.describe() if run.calib is not None else None)
    key = stable_hash(config)

    meta = store.read_meta(key)
    if meta and meta.get("status") == "complete" and not force:
        return JobResult(key, store, meta, reused=True)
    if force or meta is None:
        store.clear_records(key)
        meta = {
            "key": key,
            "config": config,
            "created": _now(),
            "seed": seed,
            "shard_size": int(run.shard_size or DEFAULT_SHARD_SIZE),
            "runs": [],
        }
    S = int(meta["shard_size"])  # a resumed job keeps the shard size it started with
    n = len(samples)
    n_shards = (n + S - 1) // S

    def shard_ids(s: int) -> list[str]:
        return [x.id for x in samples[s * S: min(n, (s + 1) * S)]]

    # Keep only shards that are whole and hold exactly the samples they should.
    done = set()
    for s in store.shard_indices(key):
        try:
            import pyarrow.parquet as pq

            ids = pq.read_table(store.shard_path(key, s), columns=["sample_id"]).column(0).to_pylist()
        except Exception:
            ids = None
        if s < n_shards and ids == shard_ids(s):
            done.add(s)
        else:
            store.shard_path(key, s).unlink(missing_ok=True)
    todo = [s for s in range(n_shards) if s not in done]

    rinfo = {"started": _now(), "resumed_shards": len(done), "device": device_info(dev),
           "batch_size": batch_size, "workers": None, "pid": os.getpid()}
    meta.update(
        status="running",
        started=meta.get("started") or rinfo["started"],
        dataset_root=str(source.root),
        versions=versions(),
        git=git_info(),
        device=rinfo["device"],
    )
    meta["runs"].append(rinfo)
    calib = run.calib or noise_calib
    if calib is not None:  # calibration images among the evaluated ones: say how many
        meta["calibration"] = {**calib.describe(), "overlap_with_evaluated": calib.overlap(samples),
                               "source_root": calib.root}

    if todo:
        zoo_model = run.zoo_model()
        noise = build_noise(noise_cfg)
        if noise_calib is not None:
            noise.calibration = noise_calib
        if noise is not None:
            noise.prepare(zoo_model, dev)
        indices = [i for s in todo for i in range(s * S, min(n, (s + 1) * S))]
        if workers is None:
            workers = 0 if len(indices) <= 16 else min(4, os.cpu_count() or 1)
        if noise is not None and noise.loader is not None and noise.loader_in_main_process:
            workers = 0
        if noise is not None and noise.loader is not None and source.read is not None:
            raise DataError(f"noise {noise_cfg['name']!r} decodes image files; dataset {source.name} is in memory "
                            "and has none. Use it with an image-file dataset.")
        if source.read is not None:
            workers = 0  # in-memory tensors: worker processes only add start-up time
        if noise_cfg["name"] == "corruption" and entry.input_size[0] != 3:
            raise DataError(f"corruptions need RGB images; model {entry.name!r} takes {entry.input_size[0]}-channel "
                            "images. Use clean, adversarial or precision noises with it.")
        rinfo["workers"] = workers
        store.write_meta(key, meta)
        loader = torch.utils.data.DataLoader(
            _ImageDataset(samples, indices, entry_transform(entry, source),
                          noise.loader(entry) if noise is not None and noise.loader is not None else None,
                          read=source.read),
            batch_size=batch_size,
            shuffle=False,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=dev.type == "cuda",
        )
        pending: dict[int, list[dict]] = {}
        schema = record_schema(noise)
        t0 = time.perf_counter()
        seen = 0
        try:
            with _progress_bar(run.progress) as bar:
                task = bar.add_task(
                    f"{entry.name} · {noise_cfg['name']} · {source.name}",
                    total=n, completed=n - len(indices), rate="",
                )
                for batch in loader:
                    for rec in batch_records(zoo_model, batch, samples, dev, noise, seed, source.class_subset,
                                             run.clean_cache):
                        pending.setdefault(rec.pop("_index") // S, []).append(rec)
                    for s in sorted(pending):
                        expected = min(n, (s + 1) * S) - s * S
                        if len(pending[s]) == expected:
                            import pyarrow as pa

                            rows = sorted(pending.pop(s), key=lambda r: r["sample_id"])
                            store.write_shard(key, s, pa.Table.from_pylist(rows, schema=schema))
                    seen += len(batch)
                    rate = seen / max(time.perf_counter() - t0, 1e-9)
                    bar.update(task, advance=len(batch), rate=f"{rate:.1f} img/s")
        except BaseException:
            meta["status"] = "interrupted"
            if noise is not None:
                meta["checks"] = noise.job_checks()
            rinfo["ended"] = _now()
            store.write_meta(key, meta)
            raise
        if noise is not None:
            meta["checks"] = noise.job_checks()
    rinfo["ended"] = _now()
    meta.update(status="complete", finished=rinfo["ended"])
    store.write_meta(key, meta)
    return JobResult(key, store, meta, reused=False)
