"""Writing one job into the store: its meta.json and its record shards. `ShardWriter` is the only
code that writes a job's files (the engine hands it rows), so what a store promises (files
written whole, shards that hold exactly their samples, a status that says what is there) is
kept in one class.

Shard i of a job holds samples [i*S, (i+1)*S) of its sample list (S = the job's shard size,
fixed when the job is created), sorted by sample id. A job can be written by several runs, each
doing some of its shards (a resumed job; executors that split a job by shard): `begin` keeps the
shards that are whole and hold what they should, `write` adds one, and `end` sets the status
from the shards present then: complete, or partial.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Callable

from robustart.results.store import ResultsStore


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ShardWriter:
    """One job's files. `meta` is the job's meta.json as this run sees it."""

    def __init__(self, store: ResultsStore, key: str):
        self.store = store
        self.key = key
        self.meta: dict | None = store.read_meta(key)
        self.run: dict | None = None

    # ----------------------------------------------------------------- the job

    @property
    def complete(self) -> bool:
        return bool(self.meta) and self.meta.get("status") == "complete"

    def create(self, config: dict, *, shard_size: int, seed: int, force: bool = False) -> None:
        """A new job (or, with force, a new start of this one: its records are removed); an
        existing job keeps its meta and shard size."""
        if force or self.meta is None:
            self.store.clear_records(self.key)
            self.meta = {"key": self.key, "config": config, "created": now(), "seed": seed,
                         "shard_size": int(shard_size), "runs": []}

    @property
    def shard_size(self) -> int:
        return int(self.meta["shard_size"])

    def valid_shards(self, n_shards: int, expected_ids: Callable[[int], list[str]]) -> set[int]:
        """The shards present that are whole and hold exactly the samples they should; any other
        shard file is removed (a later run rewrites it)."""
        import pyarrow.parquet as pq

        done = set()
        for s in self.store.shard_indices(self.key):
            try:
                ids = pq.read_table(self.store.shard_path(self.key, s), columns=["sample_id"]).column(0).to_pylist()
            except Exception:
                ids = None
            if s < n_shards and ids == expected_ids(s):
                done.add(s)
            else:
                self.store.shard_path(self.key, s).unlink(missing_ok=True)
        return done

    # ----------------------------------------------------------------- one run

    def begin(self, info: dict, **meta: object) -> dict:
        """Start a run (status running) and record it: `info` (device, batch size, shards, ...)
        goes into meta["runs"], `meta` into the job's meta."""
        self.run = {"started": now(), "pid": os.getpid(), **info}
        self.meta.update(status="running", started=self.meta.get("started") or self.run["started"], **meta)
        self.meta["runs"].append(self.run)
        self.store.write_meta(self.key, self.meta)
        return self.run

    def update(self, **meta: object) -> None:
        self.meta.update(meta)
        self.store.write_meta(self.key, self.meta)

    def write(self, index: int, rows: list[dict], schema) -> None:
        """Shard `index` from its records (sorted by sample id), written whole or not at all."""
        import pyarrow as pa

        rows = sorted(rows, key=lambda r: r["sample_id"])
        self.store.write_shard(self.key, index, pa.Table.from_pylist(rows, schema=schema))

    def end(self, n_shards: int, *, checks: dict | None = None, metrics: Callable[[], dict] | None = None) -> str:
        """End the run: status complete when every shard is there (then `metrics()`, a summary
        of the records, is cached in meta["metrics"]), else partial."""
        if self.run is not None:
            self.run["ended"] = now()
        if checks is not None:
            self.meta["checks"] = checks
        present = set(self.store.shard_indices(self.key))
        if present >= set(range(n_shards)):
            self.meta.update(status="complete", finished=(self.run or {}).get("ended") or now())
            if metrics is not None:
                self.meta["metrics"] = metrics()
        else:
            self.meta["status"] = "partial"
        self.store.write_meta(self.key, self.meta)
        return self.meta["status"]

    def interrupt(self, checks: dict | None = None) -> None:
        """The run stopped (an error, Ctrl-C): the shards written so far stay, and resume."""
        self.meta["status"] = "interrupted"
        if checks is not None:
            self.meta["checks"] = checks
        if self.run is not None:
            self.run["ended"] = now()
        self.store.write_meta(self.key, self.meta)
