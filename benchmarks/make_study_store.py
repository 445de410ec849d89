"""Write a results store the size of a study: the zoo x the RobustART protocol, with synthetic but
realistic records, for measuring `robustart results list` and `robustart report` at scale.

    python benchmarks/make_study_store.py STORE [--jobs 7500] [--n 5000] [--shard-size 1000] [--procs 2]

Jobs: every ImageNet zoo entry (`robustart zoo list`, real names, families, preprocessing,
weight sources) x the protocol (144 jobs per model): clean; FGSM/PGD/MIM Linf, PGD/C&W L2 and
PGD L1 at the small/mid/large budgets (18); ImageNet-C, 19 corruptions x 5 severities (95);
the ImageNet-S sweep (26); precision variants (4). Configs come from the noise families
themselves (`expand_noise`), so labels, sections and WCAR / mCE groups are those of real runs;
`--jobs` takes the first N in model-major order (the last model may be partial).

Records have the columns the engine writes (`record_schema` with each noise's own fields).
Accuracies are drawn per (model, sample): a latent difficulty shared by every job of a model
makes noisy correctness nested under clean correctness and correlated across attacks (so WCAR
sits below the weakest attack), robust accuracy falls with the budget or severity, and a few
samples fail to decode in every job (status `failed`), as in a real val set. The numbers are not
any model's; the shapes of the data are.

Each job is written as ShardWriter leaves a complete job (format 2): shards of `--shard-size`
rows (sorted sample ids), and a meta.json with the layout, every shard's rows, bytes, sha256 and
ids hash, the metrics cached from the records (the engine's own function), versions, device,
runs, request. `ResultsStore.check` accepts every job at every level.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROTOCOL = ["clean", "adversarial:budget=small", "adversarial:budget=mid", "adversarial:budget=large",
            "corruption:all", "imagenet-s", "precision"]

# How much of the clean accuracy survives each noise (before per-sample noise): by attack budget,
# corruption severity; ImageNet-S and precision variants change few predictions.
_BUDGET = {"small": 0.55, "mid": 0.25, "large": 0.06}
_ATTACK = {"fgsm": 1.25, "pgd": 1.0, "mim": 1.05, "cw": 1.1}


def protocol() -> list[dict]:
    from robustart.noises import expand_noise

    out = []
    for s in PROTOCOL:
        out += expand_noise(s)
    return out


def zoo() -> list:
    from robustart.zoo import list_entries

    return [e for e in list_entries() if e.family != "nas" and e.num_classes == 1000]


def job_plan(n_jobs: int | None) -> list[tuple[int, int]]:
    """(entry index, noise index) pairs, model-major."""
    entries, noises = zoo(), protocol()
    pairs = [(i, j) for i in range(len(entries)) for j in range(len(noises))]
    return pairs if n_jobs is None else pairs[:n_jobs]


def samples(n: int) -> tuple[list[str], np.ndarray]:
    """n ImageNet-val-like sample ids (class folder / file), sorted, and their labels."""
    labels = (np.arange(n) * 1000 // n).astype(np.int32)
    ids = [f"n{1440764 + 3 * int(c):08d}/ILSVRC2012_val_{i + 1:08d}.JPEG" for i, c in enumerate(labels)]
    order = np.argsort(np.array(ids))
    return [ids[k] for k in order], labels[order]


def config(entry, noise: dict, n: int) -> dict:
    """What robustart.engine.plan.job_config makes for this entry and noise (ImageFolder val)."""
    import robustart
    from robustart.results.store import stable_hash

    cfg = {
        "model": {"name": entry.name, "arch": entry.arch, "family": entry.family, "form": entry.form,
                  "timm_name": entry.timm_name, "weights": entry.weights.describe(),
                  "preprocessing": {k: list(v) if isinstance(v, tuple) else v for k, v in entry.data_config.items()}},
        "weights_sha256": hashlib.sha256(entry.name.encode()).hexdigest(),
        "noise": noise,
        "dataset": {"kind": "imagefolder", "name": "val", "n": n, "fingerprint": stable_hash(["study-val", n])},
        "precision": "fp32",
        "robustart": robustart.__version__,
    }
    if noise["name"] != "clean":
        cfg["seed"] = 0
    return cfg


def strength(noise: dict) -> float:
    """Share of clean-correct samples a noise leaves correct, on average."""
    name = noise["name"]
    if name == "clean":
        return 1.0
    if noise.get("budget"):
        return min(0.97, _BUDGET[noise["budget"]] * (_ATTACK.get(name, 1.0) if noise.get("norm") == "linf" else 1.15))
    if name == "corruption":
        return 1.0 - 0.11 * int(noise["severity"]) - (0.08 if "noise" in noise["corruption"] else 0.0)
    if name == "imagenet-s":
        return 0.985
    return 0.998  # precision


def _rng(*parts) -> np.random.Generator:
    return np.random.default_rng(int(hashlib.sha256(repr(parts).encode()).hexdigest()[:15], 16))


def records(entry, noise: dict, schema, ids: list[str], labels: np.ndarray):
    """One job's records as a pyarrow Table with the engine's schema."""
    import pyarrow as pa

    n = len(ids)
    model_rng = _rng("model", entry.name, n)
    acc = 0.62 + 0.25 * model_rng.random()  # the model's clean accuracy
    diff = model_rng.random(n)  # each sample's difficulty for this model: shared by its jobs
    jitter = _rng("job", entry.name, json.dumps(noise, sort_keys=True)).random(n)
    clean_ok = diff < acc
    s = strength(noise)
    # correct under the noise: clean-correct and easy enough; a small job-specific jitter so
    # attacks of one budget disagree on some samples
    correct = clean_ok & (diff + 0.08 * (jitter - 0.5) < acc * s) if noise["name"] != "clean" else clean_ok
    failed = (np.arange(n) % 2500) == 1777 % min(n, 2500)  # files that do not decode: failed in every job
    other = (labels + 1 + (jitter * 998).astype(np.int32)) % 1000
    pred = np.where(correct, labels, other).astype(np.int32)
    clean_pred = np.where(clean_ok, labels, (labels + 1 + (diff * 998).astype(np.int32)) % 1000).astype(np.int32)
    if noise["name"] == "imagenet-s" or noise["name"] == "precision":  # flips keep most wrong predictions
        keep = (correct == clean_ok) & (jitter > 0.03)
        pred = np.where(keep, clean_pred, pred).astype(np.int32)
    prob = np.where(correct, 0.5 + 0.5 * jitter, 0.4 * jitter).astype(np.float32)
    margin = np.where(correct, 4 * jitter, -4 * jitter).astype(np.float32)
    top5 = np.stack([pred, (pred + 1) % 1000, (pred + 2) % 1000, (pred + 3) % 1000, (pred + 4) % 1000], 1)
    pred[failed] = -1
    clean_pred[failed] = -1
    correct = correct & ~failed
    clean_ok = clean_ok & ~failed
    lengths = np.where(failed, 0, 5)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    cols = {
        "sample_id": pa.array(ids, pa.string()),
        "label": pa.array(labels, pa.int32()),
        "pred": pa.array(pred, pa.int32()),
        "top5": pa.ListArray.from_arrays(pa.array(offsets), pa.array(top5[~failed].ravel(), pa.int32())),
        "correct": pa.array(correct),
        "prob": pa.array(np.where(failed, np.nan, prob).astype(np.float32)),
        "margin": pa.array(np.where(failed, np.nan, margin).astype(np.float32)),
        "status": pa.array(np.where(failed, "failed", "ok")),
        "error": pa.array(np.where(failed, "cannot identify image file (truncated JPEG)", "")),
        "note": pa.array(np.full(n, ""), pa.string()),
    }
    if noise["name"] != "clean":
        cols["clean_pred"] = pa.array(clean_pred, pa.int32())
        cols["clean_correct"] = pa.array(clean_ok)
        attacked = clean_ok
        extra = {
            "attacked": attacked, "success": attacked & ~correct,
            "pert_norm": np.where(attacked, float(noise.get("eps") or 0) * (0.6 + 0.4 * jitter), np.nan),
            "pert_linf": np.where(attacked, 0.9 * float(noise.get("eps") or 0) if noise.get("norm") == "linf" else 0.05, np.nan),
            "min_norm": np.where(attacked & (noise["name"] == "cw"), 0.5 + jitter, np.nan),
            "grad_zero": np.zeros(n, bool),
            "loss_gain": np.where(attacked, 0.1 + jitter, np.nan),
            "pixel_diff": 2.0 * jitter, "pixel_changed": 0.3 + 0.2 * jitter,
            "logit_diff": 0.01 * jitter,
        }
        for f in schema.names[len(cols):]:
            v = np.asarray(extra[f])
            cols[f] = pa.array(np.where(failed, np.nan, v) if v.dtype.kind == "f" else v & ~failed,
                               type=schema.field(f).type, from_pandas=True)
    return pa.table(cols, schema=schema)


_CTX: dict = {}


def _init(root: str, n: int, shard_size: int, template: dict) -> None:
    from robustart.engine.records import record_schema
    from robustart.noises import build_noise

    ids, labels = samples(n)
    noises = protocol()
    schemas = []
    for cfg in noises:
        schemas.append(record_schema(build_noise(cfg)) if cfg["name"] != "clean" else record_schema(None))
    _CTX.update(root=Path(root), n=n, size=shard_size, entries=zoo(), noises=noises, schemas=schemas, ids=ids,
                labels=labels, template=template)


def write_job(pair: tuple[int, int]) -> int:
    """Write one complete job; returns its bytes on disk."""
    import pyarrow.parquet as pq

    from robustart.engine.execute import _metrics
    from robustart.results.store import atomic_write_json, ids_hash, shard_name, stable_hash

    c = _CTX
    entry, noise = c["entries"][pair[0]], c["noises"][pair[1]]
    cfg = config(entry, noise, c["n"])
    key = stable_hash(cfg)
    d = c["root"] / "jobs" / key
    rec_dir = d / "records"
    rec_dir.mkdir(parents=True, exist_ok=True)
    table = records(entry, noise, c["schemas"][pair[1]], c["ids"], c["labels"])
    n, size = c["n"], c["size"]
    shards, total = [], 0
    for s in range((n + size - 1) // size):
        part = table.slice(s * size, size)
        buf = io.BytesIO()
        pq.write_table(part, buf)
        data = buf.getvalue()
        (rec_dir / shard_name(s)).write_bytes(data)
        total += len(data)
        shards.append({"index": s, "file": shard_name(s), "rows": part.num_rows, "bytes": len(data),
                       "sha256": hashlib.sha256(data).hexdigest(), "ids": ids_hash(c["ids"][s * size:(s + 1) * size])})
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t = c["template"]
    meta = {
        "format": 2, "key": key, "config": cfg, "created": now, "seed": 0,
        "layout": {"n": n, "shard_size": size, "n_shards": len(shards)}, "shard_size": size, "records": "records",
        "runs": [{"id": key[:8], "started": now, "ended": now, "pid": os.getpid(), "batch_size": 256,
                  "workers": 8, "resumed_shards": 0, "device": t["device"]}],
        "status": "complete", "started": now, "finished": now, "data_sha256": None, "dataset_root": "/data/imagenet/val",
        "versions": t["versions"], "git": t["git"], "device": t["device"], "skipped": [],
        "request": {"backend": "fake", "data": "/data/imagenet/val", "data_root": None, "limit": None,
                    "model": entry.name, "precision": "fp32", "seed": 0},
        "shards": shards, "metrics": _metrics(table.to_pandas()),
    }
    if noise["name"] != "clean":
        meta["checks"] = {"deterministic_forward": True, "eval_mode": True, "forward_max_abs_diff": 0.0,
                          "outputs_are_logits": True, "warnings": []}
    atomic_write_json(d / "meta.json", meta)
    return total


def template() -> dict:
    from robustart.engine.env import device_info, git_info, versions

    import torch

    dev = device_info(torch.device("cpu"))
    dev.update(name="NVIDIA H100 80GB HBM3", type="cuda", threads=16)  # a study runs on GPUs
    return {"versions": versions(), "git": git_info(), "device": dev}


def make(root: str | Path, n_jobs: int | None = 7500, n: int = 5000, shard_size: int = 1000, procs: int = 2,
         progress: bool = True, pairs: list[tuple[int, int]] | None = None) -> dict:
    """Write the store (the first `n_jobs` of zoo x protocol, or the given (entry index, noise
    index) `pairs`); returns what was written (jobs, records, bytes, seconds)."""
    import multiprocessing as mp

    root = Path(root)
    (root / "jobs").mkdir(parents=True, exist_ok=True)
    pairs = job_plan(n_jobs) if pairs is None else pairs
    t0 = time.perf_counter()
    args = (str(root), n, shard_size, template())
    total = 0
    if procs <= 1:
        _init(*args)
        it = map(write_job, pairs)
        pool = None
    else:
        pool = mp.get_context("fork").Pool(procs, initializer=_init, initargs=args)
        it = pool.imap_unordered(write_job, pairs, chunksize=16)
    try:
        for k, b in enumerate(it, 1):
            total += b
            if progress and (k % 500 == 0 or k == len(pairs)):
                el = time.perf_counter() - t0
                print(f"{k}/{len(pairs)} jobs, {total / 1e9:.2f} GB, {el:.0f} s, {k / el:.1f} jobs/s", file=sys.stderr)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return {"jobs": len(pairs), "records": len(pairs) * n, "bytes": total, "seconds": time.perf_counter() - t0,
            "shard_size": shard_size, "n": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store")
    ap.add_argument("--jobs", type=int, default=7500, help="first N jobs of zoo x protocol (default 7500; 0: all)")
    ap.add_argument("--n", type=int, default=5000, help="records per job (default 5000)")
    ap.add_argument("--shard-size", type=int, default=1000, help="records per shard file (default 1000)")
    ap.add_argument("--procs", type=int, default=2)
    a = ap.parse_args()
    out = make(a.store, a.jobs or None, a.n, a.shard_size, a.procs)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
