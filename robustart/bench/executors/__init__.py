"""Executors: who computes a plan's units (job, shard). One file each, one line in
robustart/plugins.py (group `executors`); an installed package adds its own with an entry point
of group `robustart.executors`:

    class MyExecutor(Executor):
        name = "mine"
        help = "..."
        options = {"queue": "which queue"}          # what run_plan(options=...) may give it
        def run(self, jobs, *, workers, retries, options, view, run): ...   # until no unit is left

`run` computes every unit of `jobs` it can; `robustart.bench.run.run_plan` then completes jobs
whose shards are all in, and reports what is missing. Workers that share the store's filesystem
take units with `robustart.bench.run.work`; `supervise` below starts such workers, notices the
ones that die and replaces them.
"""

from __future__ import annotations

import time

from robustart.errors import RobustartError
from robustart.registry import Registry


class Executor:
    name = ""
    help = ""
    extra: str | None = None  # the robustart extra it needs (robustart.errors.EXTRAS)
    options: dict = {}

    def check(self) -> None:
        """Raise the error naming the pip command when this executor's extra is not installed."""
        if self.extra is not None:
            from robustart.errors import need_extra

            need_extra(self.extra, f"executor {self.name!r}")

    def run(self, jobs, *, workers, retries, options, view, run) -> list[str] | None:
        """Compute the units of `jobs`; returns notes for the outcome (why workers died). `run`
        is the run's id: failed attempts are recorded with it (`work(..., run=run)`)."""
        raise NotImplementedError


def _check(name, obj):
    if not isinstance(obj, Executor):
        raise RobustartError(f"executor {name!r} must be a robustart.bench.executors.Executor, got {obj!r}.")


EXECUTORS = Registry("executor", "executors", check=_check)


class WorkerHandle:
    """A started worker: `alive()`, and `failure()` (why it ended badly, or None)."""

    def alive(self) -> bool:
        raise NotImplementedError

    def failure(self) -> str | None:
        raise NotImplementedError


def note_dead_holders(jobs, noted: set, run: str | None = None) -> int:
    """Record a failed attempt for each unit whose claim's holder is dead (stale), once per
    claim: the unit a killed worker was computing. Returns how many were found."""
    from robustart.bench.run import missing_shards, record_failure
    from robustart.results import claims as C
    from robustart.results.store import ResultsStore

    found = 0
    for job in jobs:
        store = ResultsStore(job.store)
        for h in C.holders(store.claims_dir(job.key)):
            if not h.unit.startswith("shard-") or h.token in noted or not h.stale():
                continue
            noted.add(h.token)
            shard = int(h.unit.split("-")[1])
            if shard in missing_shards(store, job):
                record_failure(store, job.key, shard, f"worker pid {h.pid} on {h.host} died while computing it",
                               "supervisor", run)
                found += 1
    return found


def supervise(jobs, *, n: int, start, retries: int, view=None, poll: float = 0.5, run: str | None = None) -> list[str]:
    """Run `n` workers (`start(index)` -> WorkerHandle) over `jobs` until no unit is left: a
    worker that dies is noticed (its units get a failed attempt, and go to the others as their
    claims are stale), and replaced while units are left, at most `retries` times per worker
    slot. Waits while units are held by live processes of other runs. Returns why each worker
    that died did."""
    from robustart.bench.run import attempts, missing_shards
    from robustart.results.store import ResultsStore

    def left() -> bool:
        for job in jobs:
            store = ResultsStore(job.store)
            if any(attempts(store, job.key, s, run) <= retries for s in missing_shards(store, job)):
                return True
        return False

    handles = {i: start(i) for i in range(n)}
    restarts = 0
    noted: set = set()
    deaths: list[str] = []
    try:
        while True:
            time.sleep(poll)
            for i, h in list(handles.items()):
                if h is None or h.alive():
                    continue
                why = h.failure()
                handles[i] = None
                if why is not None:
                    deaths.append(why)
                    note_dead_holders(jobs, noted, run)
                    if view is not None:
                        view.note = f"a worker died ({why}); {'replacing it' if restarts < retries * n else 'not replaced'}"
                    if restarts < retries * n and left():
                        restarts += 1
                        handles[i] = start(i)
            if all(h is None for h in handles.values()):
                if not left():
                    return deaths
                if restarts < retries * n:  # units left (a worker ended early): start one more
                    restarts += 1
                    handles[0] = start(0)
                    continue
                return deaths
    except BaseException:
        for h in handles.values():
            if h is not None:
                try:
                    h.stop()
                except Exception:
                    pass
        raise
