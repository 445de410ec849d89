"""The `slurm` executor, through submitit: an array of workers that take units through the
store's claims on a filesystem every node shares (the store, the data and the weights).

Each array task runs `robustart.bench.run.work` (the loop of a local worker process). The driver
submits the array, shows progress from the store, notices workers that ended badly and submits
replacements while units are left. A worker is `submitit.helpers.Checkpointable`: on preemption
or at its time limit Slurm requeues it (with `requeue`, the default), and it resumes taking
units; the unit it was computing is taken over by whoever finds its claim stale (its heartbeat
older than ROBUSTART_CLAIM_LEASE seconds, or its pid dead on the same host).
"""

from __future__ import annotations

from pathlib import Path

from robustart.bench.executors import Executor, WorkerHandle, supervise

try:  # the class must be importable (pickled by reference) where submitit is installed
    from submitit.helpers import Checkpointable as _Base
except ImportError:  # the executor then refuses to run, naming the extra
    _Base = object


class Worker(_Base):
    """One array task: take units until none is left; requeued as is when preempted."""

    def __call__(self, jobs, retries: int, threads: int | None, run: str | None = None) -> dict:
        import os

        import torch

        from robustart.bench.run import work

        if threads:
            torch.set_num_threads(threads)
        where = f"slurm job {os.environ.get('SLURM_JOB_ID', '?')} task {os.environ.get('SLURM_ARRAY_TASK_ID', '?')}"
        return work(jobs, retries=retries, chunk=1, where=where, run=run)


def worker_fn(jobs, retries: int, threads: int | None, run: str | None = None) -> dict:
    """The same, without requeueing (requeue=False)."""
    return Worker.__call__(None, jobs, retries, threads, run)


class _Job(WorkerHandle):
    def __init__(self, job):
        self.job = job

    def alive(self) -> bool:
        return not self.job.done()

    def failure(self) -> str | None:
        state = self.job.state
        try:
            self.job.result()
            return None
        except Exception as e:
            lines = [x for x in str(e).strip().splitlines() if x.strip()]
            why = f": {type(e).__name__}: {lines[0].strip() if lines else ''}"  # (the rest: its log)
        return f"submitit job {self.job.job_id} ended {state}{why}"

    def stop(self) -> None:
        try:
            self.job.cancel(check=False)
        except Exception:
            pass


class SlurmExecutor(Executor):
    name = "slurm"
    help = "an array of Slurm workers through submitit, taking units through the store's claims (shared filesystem)"
    extra = "slurm"
    options = {"folder": "submitit's folder (logs, pickles; default <store>/bench-slurm)",
               "partition": "Slurm partition", "gpus_per_worker": "GPUs per array task (default 0)",
               "cpus_per_worker": "CPUs per array task (default 1)", "time_min": "time limit per task (default 240)",
               "mem_gb": "memory per task", "array_parallelism": "at most this many tasks at once",
               "requeue": "requeue preempted or timed-out tasks (default true)",
               "cluster": "'local' runs tasks as local subprocesses (default: Slurm where sbatch exists)",
               "slurm": "extra slurm_* parameters (a dict)"}

    def run(self, jobs, *, workers, retries, options, view, run) -> list[str] | None:
        import submitit

        folder = Path(options.get("folder") or Path(jobs[0].store) / "bench-slurm")
        ex = submitit.AutoExecutor(folder=folder / "%j", cluster=options.get("cluster"))
        cpus = int(options.get("cpus_per_worker") or 1)
        params = {"timeout_min": int(options.get("time_min") or 240), "cpus_per_task": cpus,
                  "gpus_per_node": int(options.get("gpus_per_worker") or 0), "name": "robustart-bench",
                  "slurm_partition": options.get("partition"), "slurm_mem_gb": options.get("mem_gb"),
                  "slurm_array_parallelism": options.get("array_parallelism")}
        params.update({k if k.startswith("slurm_") else f"slurm_{k}": v for k, v in (options.get("slurm") or {}).items()})
        ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
        fn = Worker() if options.get("requeue", True) else worker_fn
        n = int(workers or 1)

        first = list(ex.map_array(fn, [jobs] * n, [retries] * n, [cpus] * n, [run] * n))  # one array of n tasks

        def start(i: int) -> _Job:  # the array's tasks, then single replacements
            return _Job(first.pop(0) if first else ex.submit(fn, jobs, retries, cpus, run))

        return supervise(jobs, n=n, start=start, retries=retries, view=view, run=run)


EXECUTOR = SlurmExecutor()
