"""Writing one job into the store: its meta.json and its record shards. `ShardWriter` is the only
code that writes a job's files (the engine hands it rows), so what a store promises (files
written whole, shards that hold exactly their samples, a status that the files prove) is kept
in one class.

Shard i of a job holds samples [i*S, (i+1)*S) of its sample list (S = the job's shard size,
fixed in meta.json when the job is created), sorted by sample id. A job can be written by
several runs, each doing some of its shards (a resumed job; executors that split a job by
shard). The unit a process claims (robustart.results.claims) is the job, or one shard of it:

    w = ShardWriter(store, key)
    w.claim_job(on_wait)               # or w.claim_shards([3, 4], on_wait): a worker's units
                                       # (wait=False: only those free now, returned)
    w.open(config, n=..., shard_size=..., seed=..., force=...)   # new, resumed, repaired or a new generation
    done = w.valid_shards(expected_ids)    # shards already there and right (others removed)
    w.begin(info); w.write(i, rows, schema) ...; w.end(expected_ids, metrics=...)
    w.release()

`end` makes the job complete only when every shard is there and holds what it should; it then
lists each shard (rows, bytes, sha256, ids) in meta.json. A forced run writes a new generation
(`records-<gen>/`, `meta-<gen>.json`) and `end` switches to it with one rename.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from robustart.errors import StoreError
from robustart.results import claims as C
from robustart.results.store import FORMAT, DamagedJobError, ResultsStore, file_sha256, ids_hash, shard_name


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ClaimLostError(StoreError):
    """Another process took this run's claim over (it judged it stale); this run stops."""


class ShardWriter:
    """One job's files. `meta` is the job's meta.json as this run sees it."""

    def __init__(self, store: ResultsStore, key: str):
        self.store = store
        self.key = key
        self.store.job_dir(key)  # refuses a key that is not a key
        try:
            self.meta: dict | None = store.read_meta(key)
        except DamagedJobError:
            self.meta = None
        self.run: dict | None = None
        self.claims: list[C.Claim] = []
        self.meta_file = store.meta_path(key)  # a forced run's meta-<gen>.json until it is complete
        self.folder: Path | None = None
        self.whole_job = True
        self.note = ""  # what open() did, for the run's record ("repaired: ...", "new generation")

    # ----------------------------------------------------------------- claims

    def claim_job(self, on_wait: Callable[[C.Holder], None] | None = None) -> None:
        """Hold the job's claim; waits while another live process holds it or any of its shards."""
        folder = self.store.claims_dir(self.key)
        self.claims.append(C.acquire(folder, "job", on_wait=on_wait))
        told = False
        while True:  # workers holding shards of this job finish them first
            busy = [h for h in C.holders(folder) if h.unit.startswith("shard-") and not h.stale()]
            if not busy:
                break
            if not told and on_wait is not None:
                on_wait(busy[0])
                told = True
            time.sleep(0.2)
        self.whole_job = True

    def claim_shards(self, shards, on_wait: Callable[[C.Holder], None] | None = None, *,
                     wait: bool = True) -> list[int]:
        """Hold the claims of these shards (what a worker of a multi-process executor computes)
        and return them. With `wait`, waits while another process holds one of them, or the
        whole job; without it, takes the shards that are free now and returns those (none while
        a live run holds the whole job), so workers never block on one another."""
        folder = self.store.claims_dir(self.key)
        got = []
        for s in sorted(shards):
            while True:
                c = C.acquire(folder, f"shard-{s:05d}", on_wait=on_wait, wait=wait)
                if c is None:  # another live process computes it
                    break
                job = C.read_holder(folder / "job.claim")
                if job is None or job.stale():
                    self.claims.append(c)
                    got.append(s)
                    break
                c.release()  # a run of the whole job goes first
                if not wait:
                    self.whole_job = False
                    return got
                if on_wait is not None:
                    on_wait(job)
                while (h := C.read_holder(folder / "job.claim")) is not None and not h.stale():
                    time.sleep(0.2)
        self.whole_job = False
        return got

    def _check_claims(self) -> None:
        lost = [c for c in self.claims if c.lost or not c.refresh()]
        if lost:
            raise ClaimLostError(f"job {self.key}: another process took over this run's claim "
                                 f"({lost[0].path.name}); this run stops and leaves the job to it.")

    def release(self) -> None:
        for c in self.claims:
            c.release()
        self.claims = []

    def _meta_lock(self):
        """The claim held while meta.json is read, changed and written (workers share a job)."""
        return C.acquire(self.store.claims_dir(self.key), "meta", poll=0.05)

    # ----------------------------------------------------------------- the job

    @property
    def complete(self) -> bool:
        return bool(self.meta) and self.meta.get("status") == "complete"

    @property
    def shard_size(self) -> int:
        return int(self.meta["layout"]["shard_size"])

    def open(self, config: dict, *, n: int, shard_size: int, seed: int, force: bool = False,
             extra: dict | None = None) -> None:
        """Decide what this run writes, under its claim: a new job; a new start of it (`force`,
        or the job's meta unreadable); a damaged complete job, reopened (its good shards stay);
        or a job that exists, resumed with its own layout."""
        state = self.store.check(self.key, level="sha256")
        self.meta = state.meta
        layout = {"n": int(n), "shard_size": int(shard_size), "n_shards": (int(n) + int(shard_size) - 1) // int(shard_size)}
        fresh = {"format": FORMAT, "key": self.key, "config": config, "created": now(), "seed": seed,
                 "layout": layout, "shard_size": layout["shard_size"], "records": "records", "runs": [],
                 "status": "new", **(extra or {})}
        if force and self.meta is not None and self.whole_job:
            gen = uuid.uuid4().hex[:8]  # the old result stays readable until this one is complete
            fresh.update(records=f"records-{gen}", runs=list(self.meta.get("runs", [])))
            self.meta = fresh
            self.meta_file = self.store.job_dir(self.key) / f"meta-{gen}.json"
            self.note = "a new generation (--force); the previous result stays until it is complete"
        elif self.meta is None or self.meta.get("format", 1) < FORMAT or not _layout_ok(self.meta.get("layout"), n):
            if state.problems:
                self.note = f"started over: {state.reason}"
            if self.whole_job:
                self._clear_generations(keep=None)
            self.meta = fresh
        else:
            if state.damaged:
                self.note = f"repaired: {state.reason}"
                self.meta.update(status="partial", shards=[])
                self.meta.pop("metrics", None)
            self.meta.update(extra or {})
        if self.whole_job and self.meta_file == self.store.meta_path(self.key):
            self._clear_generations(keep=self.meta.get("records", "records"))
        self.folder = self.store.job_dir(self.key) / self.meta.get("records", "records")
        self.folder.mkdir(parents=True, exist_ok=True)

    def _clear_generations(self, keep: str | None) -> None:
        """Remove what interrupted forced runs left (records-<gen>/, meta-<gen>.json) and, with
        keep=None, every records folder. Only under the job's claim."""
        d = self.store.job_dir(self.key)
        if not d.is_dir():
            return
        for p in d.iterdir():
            if p.name.startswith("records") and p.is_dir() and p.name != keep:
                shutil.rmtree(p, ignore_errors=True)
            elif p.name.startswith("meta-") and p.name.endswith(".json"):
                p.unlink(missing_ok=True)

    def valid_shards(self, expected_ids: Callable[[int], list[str]]) -> set[int]:
        """The shards present that are whole and hold exactly the samples they should; any other
        shard file is removed (a later run rewrites it)."""
        import pyarrow.parquet as pq

        n_shards = int(self.meta["layout"]["n_shards"])
        done = set()
        for s in self.store.shard_indices(self.key, self.folder):
            path = self.folder / shard_name(s)
            try:
                ids = pq.read_table(path, columns=["sample_id"]).column(0).to_pylist()
            except Exception:
                ids = None
            if s < n_shards and ids == expected_ids(s):
                done.add(s)
            elif self.whole_job or s >= n_shards:
                path.unlink(missing_ok=True)
        return done

    # ----------------------------------------------------------------- one run

    def _save(self, change: Callable[[dict], None]) -> None:
        """Apply `change` to meta and write it; workers sharing a job re-read it under a lock."""
        if self.whole_job or self.meta_file != self.store.meta_path(self.key):
            change(self.meta)
            self._check_claims()
            self.store.write_meta(self.key, self.meta) if self.meta_file == self.store.meta_path(self.key) \
                else _write_json(self.meta_file, self.meta)
            return
        with self._meta_lock():
            try:
                current = self.store.read_meta(self.key)
            except DamagedJobError:
                current = None
            if current is not None and current.get("records") == self.meta.get("records"):
                if self.run is not None:  # keep other workers' runs, ours updated
                    runs = [r for r in current.get("runs", []) if r.get("id") != self.run.get("id")]
                    current["runs"] = runs
                self.meta = {**current, "runs": current.get("runs", [])}
                if self.run is not None:
                    self.meta["runs"].append(self.run)
            change(self.meta)
            self._check_claims()
            self.store.write_meta(self.key, self.meta)

    def begin(self, info: dict, **meta: object) -> dict:
        """Start a run (status running) and record it: `info` (device, batch size, shards, ...)
        goes into meta["runs"], `meta` into the job's meta."""
        self.run = {"id": uuid.uuid4().hex[:8], "started": now(), "pid": os.getpid(), **info}
        if self.note:
            self.run["note"] = self.note

        def change(m):
            m.update(status="running", started=m.get("started") or self.run["started"], **meta)
            if self.run not in m["runs"]:
                m["runs"].append(self.run)
        self._save(change)
        return self.run

    def update(self, **meta: object) -> None:
        self._save(lambda m: m.update(meta))

    def write(self, index: int, rows: list[dict], schema, expected: list[str] | None = None) -> None:
        """Shard `index` from its records (sorted by sample id), written whole or not at all;
        with `expected`, its sample ids must be exactly those."""
        import pyarrow as pa

        rows = sorted(rows, key=lambda r: r["sample_id"])
        if expected is not None and [r["sample_id"] for r in rows] != list(expected):
            raise StoreError(f"job {self.key}: shard {index} would hold other samples than its layout says; "
                             "nothing was written.")
        self._check_claims()
        self.store.write_shard(self.key, index, pa.Table.from_pylist(rows, schema=schema), folder=self.folder)

    def write_table(self, index: int, table, expected: list[str] | None = None) -> None:
        """Shard `index` from a records table another process computed (an executor's driver
        writing what its workers send back); the same checks as `write`."""
        table = table.sort_by("sample_id")
        if expected is not None and table.column("sample_id").to_pylist() != list(expected):
            raise StoreError(f"job {self.key}: shard {index} would hold other samples than its layout says; "
                             "nothing was written.")
        self._check_claims()
        self.store.write_shard(self.key, index, table, folder=self.folder)

    def end(self, expected_ids: Callable[[int], list[str]], *, checks: dict | None = None,
            metrics: Callable[[object], dict] | None = None) -> str:
        """End the run: status complete when every shard is there and right (each is then
        listed with its rows, bytes, sha256 and ids; `metrics(records)`, a summary, is cached in
        meta["metrics"]), else partial. Workers sharing a job end one at a time, so the last one
        sees every shard. A forced run's new generation replaces the old one here."""
        if self.run is not None:
            self.run["ended"] = now()
        n_shards = int(self.meta["layout"]["n_shards"])

        def change(m):
            if checks is not None:
                m["checks"] = checks
            whole, self.whole_job = self.whole_job, True  # under the meta lock: bad files may go
            try:
                done = self.valid_shards(expected_ids)
            finally:
                self.whole_job = whole
            if not done >= set(range(n_shards)):
                if m.get("status") != "complete":
                    m["status"] = "partial"
                return
            entries = []
            for s in range(n_shards):
                p = self.folder / shard_name(s)
                ids = expected_ids(s)
                entries.append({"index": s, "file": p.name, "rows": len(ids), "bytes": p.stat().st_size,
                                "sha256": file_sha256(p), "ids": ids_hash(ids)})
            m.update(status="complete", finished=(self.run or {}).get("ended") or now(), shards=entries)
            if metrics is not None:
                m["metrics"] = metrics(self.store.read_records(self.key, m))

        self._save(change)
        if self.meta["status"] == "complete" and self.meta_file != self.store.meta_path(self.key):
            self._switch()
        return self.meta["status"]

    def _switch(self) -> None:
        """A forced run's generation becomes the job's result: one rename of its meta."""
        self._check_claims()
        os.replace(self.meta_file, self.store.meta_path(self.key))
        self.meta_file = self.store.meta_path(self.key)
        self._clear_generations(keep=self.meta["records"])

    def interrupt(self, checks: dict | None = None) -> None:
        """The run stopped (an error, Ctrl-C): the shards written so far stay, and resume (a
        forced run's generation is dropped by the next run: the previous result stands)."""
        def change(m):
            if m.get("status") != "complete":
                m["status"] = "interrupted"
            if checks is not None:
                m["checks"] = checks
        if self.run is not None:
            self.run["ended"] = now()
        try:
            self._save(change)
        except (ClaimLostError, OSError):
            pass


def _layout_ok(layout, n: int) -> bool:
    """A stored layout this run can resume: n samples in shards of a positive size."""
    if not isinstance(layout, dict):
        return False
    size, k = layout.get("shard_size"), layout.get("n_shards")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (layout.get("n"), size, k)):
        return False
    return layout["n"] == int(n) and size >= 1 and k == (int(n) + size - 1) // size


def _write_json(path: Path, obj) -> None:
    from robustart.results.store import atomic_write_json

    atomic_write_json(path, obj)
