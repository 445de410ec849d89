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


def record_schema():
    import pyarrow as pa

    return pa.schema(
        [
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
    )


class _ImageDataset(torch.utils.data.Dataset):
    """Decode + eval transform; a bad file yields its reason instead of an image."""

    def __init__(self, samples: list[Sample], indices: list[int], transform):
        self.samples = samples
        self.indices = indices
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        i = self.indices[j]
        try:
            img, note = load_rgb(self.samples[i].path)
            return i, self.transform(img), "", note
        except BadImageError as e:
            return i, None, str(e), ""
        except Exception as e:  # a transform failing on an odd image must not end the run
            return i, None, f"{type(e).__name__}: {e}", ""


def _collate(batch):
    return batch


def _forward(model, x: torch.Tensor) -> torch.Tensor:
    """Logits; on CUDA out-of-memory, retry in halves instead of failing the job."""
    try:
        return model(x)
    except torch.cuda.OutOfMemoryError:
        if x.shape[0] == 1:
            raise
        torch.cuda.empty_cache()
        h = x.shape[0] // 2
        return torch.cat([_forward(model, x[:h]), _forward(model, x[h:])])


def clean_records(model, batch, samples: list[Sample], device) -> list[dict]:
    """Per-sample records for one batch of (index, uint8 image | None, error, note)."""
    rows = {}
    good = []
    for i, x, err, note in batch:
        s = samples[i]
        base = {"sample_id": s.id, "label": s.label, "note": note}
        if x is None:
            rows[i] = {**base, "pred": -1, "top5": [], "correct": False, "prob": float("nan"),
                       "margin": float("nan"), "status": "failed", "error": err}
        else:
            good.append((i, x, note))
    if good:
        xb = torch.stack([x for _, x, _ in good]).to(device, non_blocking=True).float().div_(255.0)
        with torch.inference_mode():
            logits = _forward(model, xb).float()
        n_cls = logits.shape[1]
        labels = torch.tensor([samples[i].label for i, _, _ in good], device=logits.device)
        in_range = labels < n_cls
        lab = labels.clamp(max=n_cls - 1)
        probs = logits.softmax(1)
        top5 = logits.topk(min(5, n_cls), dim=1).indices
        true_logit = logits.gather(1, lab[:, None])[:, 0]
        other = logits.scatter(1, lab[:, None], float("-inf")).amax(1)
        margin = (true_logit - other).cpu()
        prob = probs.gather(1, lab[:, None])[:, 0].cpu()
        top5 = top5.cpu()
        for k, (i, _, note) in enumerate(good):
            s = samples[i]
            if not bool(in_range[k]):
                rows[i] = {"sample_id": s.id, "label": s.label, "note": note, "pred": -1, "top5": [],
                           "correct": False, "prob": float("nan"), "margin": float("nan"),
                           "status": "failed", "error": f"label {s.label} is outside the model's {n_cls} classes"}
                continue
            t5 = top5[k].tolist()
            rows[i] = {"sample_id": s.id, "label": s.label, "pred": t5[0], "top5": t5,
                       "correct": t5[0] == s.label, "prob": float(prob[k]), "margin": float(margin[k]),
                       "status": "ok", "error": "", "note": note}
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
        return M.summary(self.records)

    def to_json(self) -> dict:
        cfg = self.meta["config"]
        m = self.metrics
        return {
            "key": self.key,
            "model": cfg["model"]["name"],
            "noise": cfg["noise"]["name"],
            "noise_config": cfg["noise"],
            "dataset": cfg["dataset"]["name"],
            "n": m["n"],
            "n_failed": m["n_failed"],
            "precision": cfg["precision"],
            "metrics": {"top1": m["top1"], "top5": m["top5"]},
            "reused": self.reused,
            "store": str(self.store.root),
        }


def job_config(entry: ModelEntry, weights_sha256: str | None, noise: dict, source: DataSource,
               samples: list[Sample], precision: str) -> dict:
    import robustart

    return {
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
) -> JobResult:
    """Run (or reuse, or resume) one job and return its result handle."""
    from robustart.engine.env import device_info, git_info, resolve_device, versions
    from robustart.zoo import weights as W
    from robustart.zoo.build import ZooModel, build_network, load_weights_into

    if batch_size < 1:
        raise RobustartError(f"--batch-size must be >= 1, got {batch_size}")
    if precision not in PRECISIONS:
        raise RobustartError(f"--precision {precision!r} is not supported yet; choose from {PRECISIONS}.")
    entry = model if isinstance(model, ModelEntry) else get_entry(model)
    noise_cfg = parse_noise(noise)
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
    config = job_config(entry, weights_sha, noise_cfg, source, samples, precision)
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
            "shard_size": int(shard_size or DEFAULT_SHARD_SIZE),
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

    run = {"started": _now(), "resumed_shards": len(done), "device": device_info(dev),
           "batch_size": batch_size, "workers": None, "pid": os.getpid()}
    meta.update(
        status="running",
        started=meta.get("started") or run["started"],
        dataset_root=str(source.root),
        versions=versions(),
        git=git_info(),
        device=run["device"],
    )
    meta["runs"].append(run)

    if todo:
        torch.manual_seed(seed)
        net = build_network(entry)
        load_weights_into(net, entry, weights_path)
        zoo_model = ZooModel(net, entry, weights_sha).to(dev).eval()
        indices = [i for s in todo for i in range(s * S, min(n, (s + 1) * S))]
        if workers is None:
            workers = 0 if len(indices) <= 16 else min(4, os.cpu_count() or 1)
        run["workers"] = workers
        store.write_meta(key, meta)
        loader = torch.utils.data.DataLoader(
            _ImageDataset(samples, indices, zoo_model.transform),
            batch_size=batch_size,
            shuffle=False,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=dev.type == "cuda",
        )
        pending: dict[int, list[dict]] = {}
        schema = record_schema()
        t0 = time.perf_counter()
        seen = 0
        try:
            with _progress_bar(progress) as bar:
                task = bar.add_task(
                    f"{entry.name} · {noise_cfg['name']} · {source.name}",
                    total=n, completed=n - len(indices), rate="",
                )
                for batch in loader:
                    for rec in clean_records(zoo_model, batch, samples, dev):
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
            run["ended"] = _now()
            store.write_meta(key, meta)
            raise
    run["ended"] = _now()
    meta.update(status="complete", finished=run["ended"])
    store.write_meta(key, meta)
    return JobResult(key, store, meta, reused=False)
