"""Running a plan's jobs: `run_plan(jobs, executor=...) -> BenchOutcome`.

Serial stand-in, replaced by the executors' work (robustart/bench/executors/): every job runs
here, one after the other, through robustart.engine.execute (each job's clean pass shared with
the other jobs of its model), and no failure is recorded per unit. The names and signatures are
the ones `robustart bench` calls."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from robustart.engine.plan import JobSpec
from robustart.results.store import ResultsStore


@dataclass
class BenchOutcome:
    complete: list[str] = field(default_factory=list)  # keys of the jobs complete at the end
    failed: list[dict] = field(default_factory=list)  # {key, shard, error, attempts}
    seconds: float = 0.0
    images: int = 0  # images evaluated by this run (reused jobs add none)


def run_serial(jobs: list[JobSpec], *, progress: bool = True, **_) -> BenchOutcome:
    from robustart.engine.execute import Resources, execute

    res = Resources(progress=progress)
    out = BenchOutcome()
    t0 = time.perf_counter()
    for job in jobs:
        r = execute(job, progress=progress, resources=res)
        out.complete.append(job.key)
        if not r.reused:
            out.images += job.n
    out.seconds = time.perf_counter() - t0
    return out


def run_plan(jobs: list[JobSpec], *, executor: str = "local", workers: int | None = None, retries: int = 2,
             progress: bool = True, options: dict | None = None) -> BenchOutcome:
    from robustart.bench.executors import EXECUTORS

    return EXECUTORS.get(executor)(jobs, workers=workers, retries=retries, progress=progress, options=options or {})


def unit_failures(store: ResultsStore | str, key: str) -> list[dict]:
    """The recorded failures of a job's units (none in this serial stand-in)."""
    return []
