"""The results store: one folder per job, keyed by the hash of the job's config.

  <store>/jobs/<key>/meta.json                  config, layout, status, shard list, versions, times
  <store>/jobs/<key>/records/shard-00000.parquet   per-sample records, in sample order
  <store>/jobs/<key>/claims/job.claim           who computes the job now (robustart.results.claims)

Format 2 (this one). A job's meta fixes its layout (n samples, shard size S, n_shards): shard i
holds samples [i*S, (i+1)*S) of the job's sample list, so a record can only be written once.
A job is `complete` only when its meta lists every shard with its row count, size, sha256 and
the hash of its sample ids, and the files prove it (`check`): reading a complete job checks the
listed files are there at their size and that no other shard file is; reusing one (eval) also
checks their sha256; `verify` also reads them. A job that fails is `damaged`: it is named in
listings, never reused, and recomputed.

Every file is written to a temporary name in the same folder, then renamed, so a file either
exists whole or not at all. A forced rerun writes a new generation (`records-<gen>/` and
`meta-<gen>.json`) beside the old one and switches to it with one rename of its meta onto
meta.json; until then the old result is intact.

Format 1 jobs (robustart before this layout: no shard list, keys from a dataset fingerprint
without modification times) are still listed and read, checked by their records alone
(counts, unique ids); their keys never match a new job's, so they are not reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustart import settings
from robustart.zoo.weights import file_sha256  # noqa: F401  (also used by engine.plan)
from robustart.errors import StoreError

FORMAT = 2
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # a hash (or a name: no separators, no dots)
_SHARD = re.compile(r"^shard-(\d{5,})\.parquet$")


class DamagedJobError(StoreError):
    """A job's files do not prove its records (a shard missing, truncated or foreign; meta.json
    unreadable). `robustart results verify --repair` or a rerun of the job fixes it."""


def stable_hash(obj: Any, n: int = 16) -> str:
    """Hash of a JSON-able object, independent of dict order."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def ids_hash(ids) -> str:
    """Hash of a list of sample ids, in order (what a shard must hold)."""
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
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


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


@dataclass
class JobState:
    """What the store can say about one job without running anything: its meta (None when
    missing or unreadable), a status (complete, running, partial, interrupted, damaged) and,
    for a damaged job, what is wrong."""

    key: str
    meta: dict | None
    status: str
    problems: list[str] = field(default_factory=list)

    @property
    def damaged(self) -> bool:
        return bool(self.problems)

    @property
    def format(self) -> int:
        return int((self.meta or {}).get("format", 1))

    @property
    def reason(self) -> str:
        return "; ".join(self.problems)

class ResultsStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else settings.store_dir()

    # ----------------------------------------------------------------- locations
    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    def job_dir(self, key: str) -> Path:
        if not isinstance(key, str) or not _KEY.match(key):  # a key is a hash: never a path
            raise StoreError(f"{key!r} is not a job key (as `robustart results list` shows them).")
        return self.jobs_dir / key

    def meta_path(self, key: str) -> Path:
        return self.job_dir(key) / "meta.json"

    def claims_dir(self, key: str) -> Path:
        return self.job_dir(key) / "claims"

    def records_dir(self, key: str, meta: dict | None = None) -> Path:
        """The folder of the job's current records (its generation's, named in meta.json)."""
        if meta is None:
            try:
                meta = self.read_meta(key)
            except DamagedJobError:
                meta = None
        name = (meta or {}).get("records", "records") if isinstance(meta, dict) else "records"
        if not isinstance(name, str) or not re.match(r"^records(-[0-9a-f]+)?$", name):
            raise DamagedJobError(f"job {key}: meta.json names records folder {name!r}")
        return self.job_dir(key) / name

    def shard_path(self, key: str, index: int, meta: dict | None = None) -> Path:
        return self.records_dir(key, meta) / shard_name(index)

    # ----------------------------------------------------------------- meta
    def read_meta(self, key: str) -> dict | None:
        """The job's meta.json; None if there is none; DamagedJobError if it is not a job's meta."""
        p = self.meta_path(key)
        try:
            text = p.read_text()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise DamagedJobError(f"job {key}: meta.json cannot be read ({e.strerror or e})") from None
        try:
            meta = json.loads(text)
        except ValueError as e:
            raise DamagedJobError(f"job {key}: meta.json is not JSON ({'empty file' if not text.strip() else e})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or "status" not in meta:
            raise DamagedJobError(f"job {key}: meta.json is not a job's meta (no config or status)")
        return meta

    def write_meta(self, key: str, meta: dict) -> None:
        atomic_write_json(self.meta_path(key), meta)

    def keys(self) -> list[str]:
        """Every job in the store: folders named by a key that hold a meta.json or records."""
        if not self.jobs_dir.is_dir():
            return []
        return sorted(p.name for p in self.jobs_dir.iterdir()
                      if _KEY.match(p.name) and ((p / "meta.json").exists() or any(p.glob("records*"))))

    def resolve(self, prefix: str) -> str:
        """The full key for a unique key prefix (as git does for commits)."""
        matches = [k for k in self.keys() if k.startswith(prefix)]
        if not matches:
            raise StoreError(f"no job {prefix!r} in the store {self.root} (see `robustart results list`).")
        if len(matches) > 1:
            raise StoreError(f"job key prefix {prefix!r} is ambiguous: {', '.join(matches[:5])}; give more characters.")
        return matches[0]

    # ----------------------------------------------------------------- records
    def write_shard(self, key: str, index: int, table, folder: Path | None = None) -> Path:
        """Write one shard (a pyarrow Table or pandas DataFrame) atomically, into the job's
        current records folder (or `folder`). It is part of the job's result only once the
        job's meta lists it (ShardWriter does that)."""
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        if not isinstance(table, pa.Table):
            table = pa.Table.from_pandas(table, preserve_index=False)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        path = (folder if folder is not None else self.records_dir(key)) / shard_name(index)
        atomic_write_bytes(path, buf.getvalue())
        return path

    def shard_indices(self, key: str, folder: Path | None = None) -> list[int]:
        """The shard files present in the job's records folder (listed in meta or not)."""
        d = folder if folder is not None else self.records_dir(key)
        if not d.is_dir():
            return []
        return sorted(int(m.group(1)) for p in d.iterdir() if (m := _SHARD.match(p.name)))

    def shard_files(self, key: str, meta: dict | None = None) -> list[Path]:
        """The files that hold the job's records: those its meta lists when it is complete
        (format 2), else the shard files present."""
        if meta is None:
            meta = self.read_meta(key)
        d = self.records_dir(key, meta)
        if meta and meta.get("format", 1) >= 2 and meta.get("status") == "complete":
            return [d / s["file"] for s in meta.get("shards", [])]
        return [d / shard_name(i) for i in self.shard_indices(key, d)]

    def read_records(self, key: str, meta: dict | None = None):
        """All records of a job as a pandas DataFrame, in sample order; DamagedJobError when a
        file cannot be read."""
        import pandas as pd
        import pyarrow.parquet as pq

        given = meta
        paths = self.shard_files(key, meta)
        if not paths:
            return pd.DataFrame()
        tables = []
        for p in paths:
            try:
                tables.append(pq.read_table(p))
            except FileNotFoundError:
                if given is None and p.parent != self.records_dir(key):  # a forced run switched generations
                    return self.read_records(key)
                raise DamagedJobError(f"job {key}: shard {p.name} is missing") from None
            except Exception as e:
                raise DamagedJobError(f"job {key}: shard {p.name} cannot be read ({type(e).__name__}: {e})") from None
        try:
            return pa_concat(tables).to_pandas()
        except Exception as e:
            raise DamagedJobError(f"job {key}: its shards do not fit together ({type(e).__name__}: {e})") from None

    def seal(self, key: str) -> dict:
        """Make a job whose meta.json and shard files were written by hand (write_meta,
        write_shard: records imported from elsewhere) complete: its layout and shard list are
        taken from the shard files, which must be 0..k-1 with equal row counts but the last."""
        import pyarrow.parquet as pq

        meta = self.read_meta(key)
        if meta is None:
            raise StoreError(f"job {key} has no meta.json to seal.")
        d = self.records_dir(key, meta)
        idx = self.shard_indices(key, d)
        if not idx or idx != list(range(len(idx))):
            raise StoreError(f"job {key}: shard files {idx[:5]} are not 0..k-1.")
        ids = [pq.read_table(d / shard_name(i), columns=["sample_id"]).column(0).to_pylist() for i in idx]
        size = len(ids[0])
        if size < 1 or any(len(x) != size for x in ids[:-1]) or not 1 <= len(ids[-1]) <= size:
            raise StoreError(f"job {key}: its shards' row counts {[len(x) for x in ids][:5]} are not one layout.")
        n = sum(len(x) for x in ids)
        meta.update(format=FORMAT, status="complete", shard_size=size,
                    layout={"n": n, "shard_size": size, "n_shards": len(idx)},
                    shards=[{"index": i, "file": shard_name(i), "rows": len(x), "bytes": (d / shard_name(i)).stat().st_size,
                             "sha256": file_sha256(d / shard_name(i)), "ids": ids_hash(x)} for i, x in zip(idx, ids)])
        self.write_meta(key, meta)
        return meta

    def clear_records(self, key: str) -> None:
        shutil.rmtree(self.records_dir(key), ignore_errors=True)

    def remove(self, key: str, keep_claims: bool = False) -> None:
        """Remove a job's folder (meta, records and, unless keep_claims, claims)."""
        d = self.job_dir(key)
        if not keep_claims:
            shutil.rmtree(d, ignore_errors=True)
            return
        for p in d.iterdir() if d.is_dir() else []:
            if p.name != "claims":
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def running(self, key: str) -> bool:
        """Whether a live process holds the job or one of its shards (robustart.results.claims)."""
        from robustart.results.claims import holders

        return any(h.unit != "meta" and not h.stale() for h in holders(self.claims_dir(key)))

    # ----------------------------------------------------------------- integrity
    def check(self, key: str, *, level: str = "names") -> JobState:
        """The job's state, checked at `level`: "names" (meta readable; a complete job's listed
        shards present at their recorded size, no unlisted shard file), "sha256" (also each
        file's checksum: what reuse checks), "read" (also each shard read whole: its row count
        and sample ids, unique and as listed: what `results verify` checks)."""
        try:
            meta = self.read_meta(key)
        except DamagedJobError as e:
            return JobState(key, None, "damaged", [str(e).split(": ", 1)[1]])
        if meta is None:
            if any(self.job_dir(key).glob("records*")):
                return JobState(key, None, "damaged", ["meta.json is missing"])
            return JobState(key, None, "missing")
        status = str(meta.get("status"))
        if status == "running" and not self.running(key):
            status = "interrupted"  # its run was killed: no live process holds it
        if status != "complete":
            return JobState(key, meta, status)
        try:
            problems = (self._check_v2(key, meta, level) if meta.get("format", 1) >= 2
                        else self._check_v1(key, meta, level))
        except DamagedJobError as e:
            problems = [str(e).split(": ", 1)[-1]]
        return JobState(key, meta, "damaged" if problems else "complete", problems)

    def _check_v2(self, key: str, meta: dict, level: str) -> list[str]:
        layout, shards = meta.get("layout"), meta.get("shards")
        if not isinstance(layout, dict) or not isinstance(shards, list):
            return ["meta.json says complete but lists no layout or shards"]
        try:
            n, size, n_shards = int(layout["n"]), int(layout["shard_size"]), int(layout["n_shards"])
        except (KeyError, TypeError, ValueError):
            return ["meta.json has a malformed layout"]
        if size < 1 or n_shards != (n + size - 1) // size:
            return [f"meta.json has an impossible layout (n={n}, shard_size={size}, n_shards={n_shards})"]
        want = [shard_name(i) for i in range(n_shards)]
        try:
            listed = [s["file"] for s in shards]
            rows = [int(s["rows"]) for s in shards]
        except (KeyError, TypeError, ValueError):
            return ["meta.json has a malformed shard list"]
        if listed != want:
            return [f"meta.json lists shards {listed[:3]}... instead of the layout's {n_shards}"]
        if rows != [min(size, n - i * size) for i in range(n_shards)]:
            return ["meta.json's shard row counts do not add up to the layout"]
        d = self.records_dir(key, meta)
        problems = []
        present = {p.name for p in d.iterdir()} if d.is_dir() else set()
        stray = sorted(p for p in present if _SHARD.match(p) and p not in set(want))
        if stray:
            problems.append(f"unlisted shard file(s) {', '.join(stray[:3])}")
        for s in shards:
            p = d / s["file"]
            if s["file"] not in present:
                problems.append(f"shard {s['file']} is missing")
                continue
            if p.stat().st_size != int(s.get("bytes", -1)):
                problems.append(f"shard {s['file']} has {p.stat().st_size} bytes, {s.get('bytes')} were written")
                continue
            if level in ("sha256", "read") and file_sha256(p) != s.get("sha256"):
                problems.append(f"shard {s['file']} differs from what was written (sha256)")
                continue
            if level == "read":
                problems += self._read_problems(p, int(s["rows"]), s.get("ids"))
        return problems

    def _read_problems(self, p: Path, rows: int, ids: str | None) -> list[str]:
        import pyarrow.parquet as pq

        try:
            got = pq.read_table(p).column("sample_id").to_pylist()
        except Exception as e:
            return [f"shard {p.name} cannot be read ({type(e).__name__}: {e})"]
        if len(got) != rows:
            return [f"shard {p.name} holds {len(got)} records, {rows} listed"]
        if len(set(got)) != len(got):
            return [f"shard {p.name} holds duplicate sample ids"]
        if ids is not None and ids_hash(got) != ids:
            return [f"shard {p.name} holds other samples than its job's (foreign shard)"]
        return []

    def _check_v1(self, key: str, meta: dict, level: str) -> list[str]:
        """A format-1 job lists no shards: its records must be readable, unique and n in all."""
        import pyarrow.parquet as pq

        n = (meta.get("config", {}).get("dataset") or {}).get("n")
        ids = []
        for p in self.shard_files(key, meta):
            try:
                ids += pq.read_table(p, columns=["sample_id"]).column(0).to_pylist()
            except Exception as e:
                return [f"shard {p.name} cannot be read ({type(e).__name__})"]
        if len(set(ids)) != len(ids):
            return [f"{len(ids) - len(set(ids))} duplicate records"]
        if n is not None and len(ids) != int(n):
            return [f"{len(ids)} records for {n} samples"]
        return []

    def verify(self, keys=None, level: str = "read") -> list[JobState]:
        """Every job (or `keys`) checked at `level` (default: every shard read)."""
        return [self.check(k, level=level) for k in (keys if keys is not None else self.keys())]

    # ----------------------------------------------------------------- listings
    def list_jobs(self, keys=None, states: list[JobState] | None = None):
        """One row per job (or per job of `keys`): key, status (damaged jobs say so, with
        `problem`), model, noise, dataset, n, times. From each job's meta.json and a names
        check of its files (no record is read, no file hashed)."""
        import pandas as pd

        if states is None:
            states = [self.check(key) for key in (self.keys() if keys is None else keys)]
        rows = []
        for st in states:
            key = st.key
            m = st.meta or {}
            cfg = m.get("config") if isinstance(m.get("config"), dict) else {}
            part = lambda k: cfg.get(k) if isinstance(cfg.get(k), dict) else {}  # noqa: E731
            rows.append(
                {
                    "key": key,
                    "status": st.status,
                    "model": part("model").get("name"),
                    "noise": part("noise").get("name"),
                    "dataset": part("dataset").get("name"),
                    "n": part("dataset").get("n"),
                    "precision": cfg.get("precision"),
                    "started": m.get("started"),
                    "finished": m.get("finished"),
                    "problem": st.reason,
                    "format": st.format,
                }
            )
        return pd.DataFrame(rows, columns=["key", "status", "model", "noise", "dataset", "n", "precision", "started",
                                           "finished", "problem", "format"])

    def summary(self, label=None, keys=None):
        """`list_jobs()` plus, per job, `n_done` (records written) and `top1`: from the metrics
        cached in its meta.json when the job is complete, else from its records (read once).
        `label(noise_config) -> str` names each job's noise (robustart.noises.noise_label);
        without it the noise's name is shown. A damaged job shows no numbers. Each meta.json is
        read once; a study's store (thousands of complete jobs) reads no record."""
        import pyarrow.parquet as pq

        from robustart.results import metrics as M

        states = [self.check(key) for key in (self.keys() if keys is None else keys)]
        df = self.list_jobs(states=states)
        labels, top1, done = [], [], []
        named: dict[str, object] = {}  # a study has thousands of jobs but a few hundred noises
        for st, key, status in zip(states, df["key"], df["status"]):
            meta = st.meta or {}
            cfg = meta.get("config", {}).get("noise") or {}
            text = json.dumps(cfg, sort_keys=True, default=str)
            if text not in named:
                try:
                    named[text] = label(cfg) if label is not None and cfg else cfg.get("name")
                except Exception:
                    named[text] = cfg.get("name")
            labels.append(named[text])
            if status == "damaged":
                top1.append(float("nan"))
                done.append(0)
                continue
            cached = meta.get("metrics") or {}
            if status == "complete" and "top1" in cached and "n" in cached:
                top1.append(float(cached["top1"]))
                done.append(int(cached["n"]))
                continue
            n = 0
            for p in self.shard_files(key, meta):
                try:
                    n += pq.read_metadata(p).num_rows
                except Exception:
                    continue
            done.append(n)
            try:
                rec = self.read_records(key, meta) if n else None
            except DamagedJobError:
                rec = None
            top1.append(M.top1(rec) if rec is not None and len(rec) else float("nan"))
        df["noise"] = labels
        df["top1"] = top1
        df["n_done"] = done
        return df


def pa_concat(tables):
    import pyarrow as pa

    return pa.concat_tables(tables)
