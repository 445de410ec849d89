"""Running a plan: its jobs as units of work (job, shard), by an executor.

    from robustart.bench.run import run_plan
    outcome = run_plan(jobs, executor="local", workers=None, retries=2, progress=True, options=None)
    outcome.complete, outcome.failed, outcome.seconds, outcome.images

`jobs` are `robustart.engine.plan.JobSpec`s (from `engine.plan()` or `bench.plan.load_plan`),
keys as `robustart eval` makes them, so whatever the store already has is reused and a run
resumes where another one stopped. A unit is one shard of one job; its records do not depend on
where it ran (each sample's randomness comes from (seed, sample id)). Units are taken through
the store's claims (`robustart.results.claims`): two runs of one plan on one store compute each
unit once, and a run waits at the end for units another live process holds. A unit that fails
is recorded with its error in `<store>/jobs/<key>/failures/shard-NNNNN.json` (`unit_failures`),
retried up to `retries` times (by any worker of any run), then reported in `outcome.failed`;
it is never dropped silently. Each run of a plan gives a unit `retries` more tries (a rerun after
a fix retries what had given up); the store keeps every attempt's error. Ctrl-C or a killed
driver loses nothing: finished shards stay and are not recomputed by the next run.

`run_plan` shows one progress view on stderr (progress=True), read from the store, so it is
right whoever computes: jobs done / running / failed, records, images/s, ETA. It returns a
`BenchOutcome`: `complete` (keys), `incomplete` (keys), `failed` (one dict per unit not in the
store: key, shard, error, attempts in this run), `seconds`, `images` (records this run added),
`notes` (what the executor noticed, e.g. a worker that died), `ok`.

Executors (`robustart.bench.executors.EXECUTORS`; `options` are executor-specific):

  local   default. `workers=None` (or 0): in this process, each job's free shards through
          `engine.execute` with one shared `Resources` (a model is built once and a suite's clean
          pass is shared by its jobs). `workers=N`: N fresh Python processes on this machine taking
          units one shard at a time; with GPUs, one per GPU (CUDA_VISIBLE_DEVICES, round robin),
          else this machine's CPU threads divided among them (torch.set_num_threads). A worker
          that dies (kill -9, out of memory) is noticed: its claims go stale (dead pid on this
          host), its units are taken by the others or by a replacement worker.
          options: threads (torch threads per worker; default cores // workers).
  ray     `pip install 'robustart[ray]'`. Connects to options["address"] or RAY_ADDRESS, or starts
          a local cluster (options num_cpus / num_gpus size it). Each unit is a Ray task; Ray
          retries a task whose worker died; workers send each shard's records back (Arrow IPC)
          with the meta fields their run adds, and the driver alone writes the store (no shared
          filesystem for results). Data and weights must resolve on every node: checked first,
          and a node that lacks one fails the run with one message naming the node and the path.
          A Ray worker process keeps one `Resources` across its tasks (model built once).
          options: address, num_cpus, num_gpus (a local cluster's size; num_cpus defaults to
          `workers`, else all cores), cpus_per_task (default 1; also its torch threads),
          gpus_per_task (default 1 when the cluster has GPUs, else 0). A cluster this call
          started is shut down at the end; one already initialised in the process is used as is.
  slurm   `pip install 'robustart[slurm]'`, through submitit. `workers=N` array tasks (default 1),
          each taking units through the store's claims: the store must be on a filesystem
          every node shares (so must data and weights). The driver submits, shows progress and
          replaces workers that died; preempted or timed-out workers requeue themselves.
          options: folder (submitit logs; default <store>/bench-slurm), partition, gpus_per_worker
          (default 0), cpus_per_worker (default 1), time_min (default 240), mem_gb,
          array_parallelism (at most this many at once), requeue (default True), cluster ("local"
          runs the workers as local subprocesses through the same pickling path; default: Slurm
          when sbatch exists), slurm (a dict of extra `slurm_*` parameters).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone

from robustart.errors import RobustartError

__all__ = ["BenchOutcome", "run_plan", "unit_failures", "work", "finalize", "missing_shards"]


@dataclass
class BenchOutcome:
    """What a run of a plan left in the store."""

    complete: list[str]  # keys of the plan's jobs that are complete
    failed: list[dict]  # units that failed every attempt: key, shard, error, attempts
    seconds: float
    images: int  # records this run added (samples x jobs)
    incomplete: list[str] = field(default_factory=list)  # keys not complete (their failed units are in `failed`)
    executor: str = "local"
    notes: list[str] = field(default_factory=list)  # what the executor noticed (workers that died)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.incomplete


# --------------------------------------------------------------------------- failures


def _failure_path(store, key: str, shard: int):
    return store.job_dir(key) / "failures" / f"shard-{shard:05d}.json"


def unit_failures(store, key: str) -> list[dict]:
    """The recorded failures of a job's units that are not in the store since: one dict per
    shard (key, shard, error: the last one, attempts, history: every attempt's error, host,
    pid, time)."""
    from robustart.results.store import ResultsStore

    store = store if isinstance(store, ResultsStore) else ResultsStore(store)
    folder = store.job_dir(key) / "failures"
    if not folder.is_dir():
        return []
    present = set(store.shard_indices(key)) if store.meta_path(key).exists() else set()
    out = []
    for p in sorted(folder.glob("shard-*.json")):
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if d["shard"] in present:
            continue
        last = d["history"][-1] if d.get("history") else {}
        out.append({"key": key, "shard": d["shard"], "error": last.get("error", "?"), "attempts": len(d["history"]),
                    "history": d["history"]})
    return out


def _failed_in(history: list[dict], run: str | None) -> int:
    return sum(1 for h in history if run is None or h.get("run") == run)


def attempts(store, key: str, shard: int, run: str | None = None) -> int:
    """How many times unit (key, shard) has failed (in run `run` of a plan: each run of a plan
    gives a unit `retries` more tries, so a rerun after a fix retries what had given up)."""
    try:
        history = json.loads(_failure_path(store, key, shard).read_text())["history"]
    except (OSError, ValueError, KeyError):
        return 0
    return _failed_in(history, run)


def record_failure(store, key: str, shard: int, error: str, where: str = "", run: str | None = None) -> int:
    """Add one failed attempt to unit (key, shard); returns its number of failures."""
    from robustart.results import claims as C
    from robustart.results.store import atomic_write_json

    path = _failure_path(store, key, shard)
    with C.acquire(store.claims_dir(key), f"failures-{shard:05d}", poll=0.05):
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError):
            d = {"key": key, "shard": shard, "history": []}
        d["history"].append({"error": error, "host": socket.gethostname(), "pid": os.getpid(), "where": where, "run": run,
                             "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        atomic_write_json(path, d)
    return len(d["history"])


def clear_failures(store, key: str) -> None:
    """A complete job's failure records are history: remove them."""
    import shutil

    shutil.rmtree(store.job_dir(key) / "failures", ignore_errors=True)


def describe(e: BaseException) -> str:
    """One line for a failed unit: the error, and where it was raised."""
    tb = traceback.extract_tb(e.__traceback__)
    at = f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
    return f"{type(e).__name__}: {e}{at}"


# --------------------------------------------------------------------------- units


def missing_shards(store, job) -> list[int]:
    """The job's shards not in the store (none for a complete job)."""
    try:
        meta = store.read_meta(job.key)
    except RobustartError:
        meta = None
    if meta is not None and meta.get("status") == "complete":
        return []
    present = set(store.shard_indices(job.key)) if meta is not None else set()
    return [s for s in range(job.n_shards) if s not in present]


def _live_holders(store, key: str) -> list:
    from robustart.results import claims as C

    return [h for h in C.holders(store.claims_dir(key)) if h.unit.startswith(("shard-", "job")) and not h.stale()]


def work(jobs, *, retries: int = 2, resources=None, chunk: int | None = None, where: str = "local",
         wait_for_others: bool = True, run: str | None = None) -> dict:
    """Take and compute units of `jobs` until none is left: the loop every worker runs (this
    process, a local worker process, a Slurm array task). Units are taken through claims
    without blocking (`execute(job, shards, wait=False)`): `chunk` shards at a time (None: every
    free shard of a job at once, one pass over its data). A failure is recorded and the unit is
    retried, here or by another worker, until it has failed `retries + 1` times in run `run`. With
    `wait_for_others`, waits at the end while another live process holds units. Returns counts
    (units computed, failed attempts)."""
    from robustart.engine.execute import Resources, execute
    from robustart.results.store import ResultsStore

    resources = resources if resources is not None else Resources(progress=False)
    stats = {"computed": 0, "failed": 0, "images": 0}
    while True:
        waiting = False
        for job in jobs:
            store = ResultsStore(job.store)
            todo = [s for s in missing_shards(store, job) if attempts(store, job.key, s, run) <= retries]
            busy = {h.unit for h in _live_holders(store, job.key)} if todo else set()
            if "job" in busy or any(f"shard-{s:05d}" in busy for s in todo):
                waiting = True  # another live process computes some: not asked again (claims are files)
                todo = [] if "job" in busy else [s for s in todo if f"shard-{s:05d}" not in busy]
            groups = [todo] if chunk is None else [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
            for group in filter(None, groups):
                try:
                    res = execute(job, group, wait=False, progress=False, resources=resources)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:
                    stats["failed"] += 1
                    waiting = True  # go round again: the unit is retried while it has attempts left
                    held = {h.unit for h in _live_holders(store, job.key)}
                    left = set(missing_shards(store, job))
                    for s in group:
                        if s in left and f"shard-{s:05d}" not in held:
                            record_failure(store, job.key, s, describe(e), where, run)
                    continue
                if not res.held and group:
                    waiting = True  # another live process holds them
                stats["computed"] += len(res.computed or [])
                stats["images"] += sum(job.shard_bounds(s)[1] - job.shard_bounds(s)[0] for s in res.computed or [])
        if not waiting or not wait_for_others:
            return stats
        time.sleep(0.5)


def finalize(jobs) -> None:
    """Complete each job whose shards are all in the store but whose run did not end (its last
    worker was killed between its last shard and the end), and drop complete jobs' failure
    records."""
    from robustart.engine.execute import Resources, execute
    from robustart.results.store import ResultsStore

    res = Resources(progress=False)
    for job in jobs:
        store = ResultsStore(job.store)
        try:
            meta = store.read_meta(job.key)
        except RobustartError:
            continue
        if meta is None:
            continue
        if meta.get("status") != "complete" and not missing_shards(store, job):
            execute(job, list(range(job.n_shards)), progress=False, resources=res)
            meta = store.read_meta(job.key)
        if meta.get("status") == "complete":
            clear_failures(store, job.key)


def given_up(jobs, retries: int, run: str | None = None) -> list[dict]:
    """Units of `jobs` not in the store that failed more than `retries` times (in run `run`)."""
    from robustart.results.store import ResultsStore

    out = []
    for job in jobs:
        store = ResultsStore(job.store)
        if not (store.job_dir(job.key) / "failures").is_dir():
            continue
        for f in unit_failures(store, job.key):
            n = _failed_in(f["history"], run)
            if n > retries:
                out.append({"key": f["key"], "shard": f["shard"], "error": f["error"], "attempts": n})
    return out


# --------------------------------------------------------------------------- progress


class ProgressView:
    """One view of the whole plan, from the store (so it is right whichever process computes):
    jobs done / running / failed, records, images/s and ETA. Rich on stderr, plain text."""

    def __init__(self, jobs, retries: int, enabled: bool = True, period: float = 1.0, run: str | None = None):
        self.jobs = jobs
        self.run = run
        self.retries = retries
        self.enabled = enabled
        self.period = period
        self.total = sum(j.n for j in jobs)
        self._stop = threading.Event()
        self._thread = None
        self.start_images = None
        self.t0 = time.perf_counter()
        self.note = ""
        self._done: set[str] = set()  # jobs seen complete (they stay so during a run)

    def counts(self) -> dict:
        from robustart.results.store import ResultsStore

        done = running = failed = images = 0
        for job in self.jobs:
            if job.key in self._done:
                done += 1
                images += job.n
                continue
            store = ResultsStore(job.store)
            left = missing_shards(store, job)
            images += job.n - sum(job.shard_bounds(s)[1] - job.shard_bounds(s)[0] for s in left)
            if not left:
                try:
                    meta = store.read_meta(job.key)
                except RobustartError:
                    meta = None
                if meta and meta.get("status") == "complete":
                    done += 1
                    self._done.add(job.key)
                continue
            if any(attempts(store, job.key, s, self.run) > self.retries for s in left):
                failed += 1
            elif _live_holders(store, job.key):
                running += 1
        return {"done": done, "running": running, "failed": failed, "images": images}

    def _loop(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from robustart.console import err

        with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]}", markup=False), TimeRemainingColumn(), console=err,
                      transient=False) as bar:
            task = bar.add_task("plan", total=self.total, rate="")
            while True:
                stopping = self._stop.wait(self.period)
                self._show(bar, task)
                if stopping:
                    return

    def _show(self, bar, task):
        c = self.counts()
        if self.start_images is None:
            self.start_images = c["images"]
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rate = (c["images"] - self.start_images) / dt
        desc = (f"jobs {c['done']}/{len(self.jobs)} done, {c['running']} running, {c['failed']} failed"
                + (f" · {self.note}" if self.note else ""))
        bar.update(task, completed=c["images"], description=desc, rate=f"{rate:.1f} img/s")

    def __enter__(self):
        if self.enabled:
            self.start_images = self.counts()["images"]
            self.t0 = time.perf_counter()
            self._thread = threading.Thread(target=self._loop, name="bench-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


# --------------------------------------------------------------------------- run a plan


def run_plan(jobs, *, executor: str = "local", workers: int | None = None, retries: int = 2,
             progress: bool = True, options: dict | None = None) -> BenchOutcome:
    """Run every unit of `jobs` not in the store yet with `executor` (see this module's
    docstring for the executors and their options) and say what the store holds afterwards."""
    from robustart.bench.executors import EXECUTORS
    from robustart.results.store import ResultsStore

    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise RobustartError(f"--retries must be a whole number >= 0, got {retries!r}.")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise RobustartError(f"--workers must be a whole number >= 0, got {workers!r}.")
    by_key = {}
    for j in jobs:  # a plan may name one job twice (two selectors matching one model)
        by_key.setdefault(j.key, j)
    unique = list(by_key.values())
    ex = EXECUTORS.get(executor)
    options = dict(options or {})
    unknown = sorted(set(options) - set(ex.options))
    if unknown:
        from robustart.registry import did_you_mean

        raise RobustartError(f"executor {executor!r} has no option {unknown[0]!r}"
                             f"{did_you_mean(unknown[0], ex.options, inline=True)}; its options: "
                             f"{', '.join(sorted(ex.options)) or 'none'}.")
    ex.check()  # its extra is installed, or the pip command
    t0 = time.perf_counter()
    run = os.urandom(6).hex()  # this run's id: its failed attempts are counted against `retries`
    view = ProgressView(unique, retries, enabled=progress and bool(unique), run=run)
    before = view.counts()["images"] if unique else 0
    notes = []
    with view:
        if unique:
            notes = ex.run(unique, workers=workers, retries=retries, options=options, view=view, run=run) or []
    finalize(unique)
    complete, incomplete = [], []
    for job in unique:
        store = ResultsStore(job.store)
        try:
            meta = store.read_meta(job.key)
        except RobustartError:
            meta = None
        (complete if meta and meta.get("status") == "complete" else incomplete).append(job.key)
    images = (ProgressView(unique, retries, enabled=False).counts()["images"] if unique else 0) - before
    failed = given_up(unique, retries, run)
    failed_keys = {f["key"] for f in failed}
    for key in incomplete:  # not complete, and no unit gave up: say so rather than drop it
        if key not in failed_keys:
            job = by_key[key]
            store = ResultsStore(job.store)
            recorded = {f["shard"]: f for f in unit_failures(store, key)}
            for s in missing_shards(store, job):
                fails = [recorded[s]] if s in recorded else []
                failed.append({"key": key, "shard": s, "attempts": fails[0]["attempts"] if fails else 0,
                               "error": fails[0]["error"] if fails else
                               "not computed" + (f"; a worker ended: {notes[-1]}" if notes else "")})
    return BenchOutcome(complete=complete, failed=failed, seconds=time.perf_counter() - t0, images=images,
                        incomplete=incomplete, executor=executor, notes=list(notes))


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
