"""The results store: one folder per job, keyed by the hash of the job's config.

  <store>/jobs/<key>/meta.json                 config, versions, environment, status, times
  <store>/jobs/<key>/records/shard-00000.parquet   per-sample records, in sample order

Every file is written to a temporary name in the same folder, then renamed, so a file either
exists whole or not at all. Shard i holds samples [i*S, (i+1)*S) of the job's sample list, so
an interrupted job resumes from the first missing shard and never duplicates a record.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from robustart import settings
from robustart.errors import StoreError


def stable_hash(obj: Any, n: int = 16) -> str:
    """Hash of a JSON-able object, independent of dict order."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


class ResultsStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else settings.store_dir()

    # ----------------------------------------------------------------- locations
    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    def job_dir(self, key: str) -> Path:
        return self.jobs_dir / key

    def meta_path(self, key: str) -> Path:
        return self.job_dir(key) / "meta.json"

    def records_dir(self, key: str) -> Path:
        return self.job_dir(key) / "records"

    def shard_path(self, key: str, index: int) -> Path:
        return self.records_dir(key) / f"shard-{index:05d}.parquet"

    # ----------------------------------------------------------------- meta
    def read_meta(self, key: str) -> dict | None:
        p = self.meta_path(key)
        if not p.is_file():
            return None
        return json.loads(p.read_text())

    def write_meta(self, key: str, meta: dict) -> None:
        atomic_write_json(self.meta_path(key), meta)

    def keys(self) -> list[str]:
        if not self.jobs_dir.is_dir():
            return []
        return sorted(p.name for p in self.jobs_dir.iterdir() if (p / "meta.json").is_file())

    def resolve(self, prefix: str) -> str:
        """The full key for a unique key prefix (as git does for commits)."""
        matches = [k for k in self.keys() if k.startswith(prefix)]
        if not matches:
            raise StoreError(f"no job {prefix!r} in the store {self.root} (see `robustart results list`).")
        if len(matches) > 1:
            raise StoreError(f"job key prefix {prefix!r} is ambiguous: {', '.join(matches[:5])}; give more characters.")
        return matches[0]

    # ----------------------------------------------------------------- records
    def write_shard(self, key: str, index: int, table) -> Path:
        """Write one shard (a pyarrow Table or pandas DataFrame) atomically."""
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        if not isinstance(table, pa.Table):
            table = pa.Table.from_pandas(table, preserve_index=False)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        path = self.shard_path(key, index)
        atomic_write_bytes(path, buf.getvalue())
        return path

    def shard_indices(self, key: str) -> list[int]:
        d = self.records_dir(key)
        if not d.is_dir():
            return []
        out = []
        for p in d.glob("shard-*.parquet"):
            try:
                out.append(int(p.stem.split("-")[1]))
            except (IndexError, ValueError):
                continue
        return sorted(out)

    def clear_records(self, key: str) -> None:
        shutil.rmtree(self.records_dir(key), ignore_errors=True)

    def read_records(self, key: str):
        """All records of a job as a pandas DataFrame, in sample order."""
        import pandas as pd
        import pyarrow.parquet as pq

        paths = [self.shard_path(key, i) for i in self.shard_indices(key)]
        if not paths:
            return pd.DataFrame()
        return pa_concat([pq.read_table(p) for p in paths]).to_pandas()

    def list_jobs(self):
        """One row per job: key, status, model, noise, dataset, n, times."""
        import pandas as pd

        rows = []
        for key in self.keys():
            m = self.read_meta(key) or {}
            cfg = m.get("config", {})
            rows.append(
                {
                    "key": key,
                    "status": m.get("status"),
                    "model": cfg.get("model", {}).get("name"),
                    "noise": cfg.get("noise", {}).get("name"),
                    "dataset": cfg.get("dataset", {}).get("name"),
                    "n": cfg.get("dataset", {}).get("n"),
                    "precision": cfg.get("precision"),
                    "started": m.get("started"),
                    "finished": m.get("finished"),
                }
            )
        return pd.DataFrame(rows, columns=["key", "status", "model", "noise", "dataset", "n", "precision", "started", "finished"])


    def summary(self, label=None):
        """`list_jobs()` plus, per job, `n_done` (records written) and `top1`: from the metrics
        cached in its meta.json when the job is complete, else from its records (read once).
        `label(noise_config) -> str` names each job's noise (robustart.noises.noise_label);
        without it the noise's name is shown."""
        import pyarrow.parquet as pq

        from robustart.results import metrics as M

        df = self.list_jobs()
        labels, top1, done = [], [], []
        for key in df["key"]:
            meta = self.read_meta(key) or {}
            cfg = meta.get("config", {}).get("noise") or {}
            labels.append(label(cfg) if label is not None and cfg else cfg.get("name"))
            cached = meta.get("metrics") or {}
            if meta.get("status") == "complete" and "top1" in cached and "n" in cached:
                top1.append(float(cached["top1"]))
                done.append(int(cached["n"]))
                continue
            paths = [self.shard_path(key, i) for i in self.shard_indices(key)]
            n = 0
            for p in paths:
                try:
                    n += pq.read_metadata(p).num_rows
                except Exception:
                    continue
            done.append(n)
            rec = self.read_records(key) if n else None
            top1.append(M.top1(rec) if rec is not None and len(rec) else float("nan"))
        df["noise"] = labels
        df["top1"] = top1
        df["n_done"] = done
        return df


def pa_concat(tables):
    import pyarrow as pa

    return pa.concat_tables(tables)
