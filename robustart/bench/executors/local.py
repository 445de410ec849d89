"""The `local` executor: this process, or N worker processes on this machine.

In this process (workers None or 0), each job's free shards run in one `engine.execute` call
with one `Resources` for the whole plan: a model is built once, and a suite's clean pass is
shared by its jobs. With workers=N, N fresh Python processes (no CUDA or thread state inherited)
take units one shard at a time through the store's claims; one GPU each (CUDA_VISIBLE_DEVICES)
when there are GPUs, else the CPU threads divided among them.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile

from robustart.bench.executors import Executor, WorkerHandle, supervise


def worker_main(jobs, retries: int, threads: int | None, where: str, run: str | None = None) -> dict:
    """A worker process: take units until none is left."""
    import torch

    from robustart.bench.run import work

    if threads:
        torch.set_num_threads(threads)
    return work(jobs, retries=retries, chunk=1, where=where, run=run)


def main(argv) -> None:
    """`python -m robustart.bench.executors.local ARGS.pkl`: a worker process (a fresh
    interpreter, like a spawned one, without re-running the driver's main module)."""
    with open(argv[0], "rb") as f:
        args = pickle.load(f)
    worker_main(*args)


class _Process(WorkerHandle):
    def __init__(self, proc):
        self.proc = proc
        self.pid = proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def failure(self) -> str | None:
        code = self.proc.poll()
        if code in (0, None):
            return None
        tail = ""
        if self.proc.stderr is not None:
            lines = [x for x in self.proc.stderr.read().decode(errors="replace").splitlines() if x.strip()]
            tail = f": {lines[-1].strip()}" if lines else ""
        return (f"worker pid {self.pid} killed by signal {-code}" if code < 0
                else f"worker pid {self.pid} exited with {code}{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class LocalExecutor(Executor):
    name = "local"
    help = "this process, or --workers N processes on this machine (one per GPU, or CPU threads divided)"
    options = {"threads": "torch threads per worker process (default: cores // workers)"}

    def run(self, jobs, *, workers, retries, options, view, run) -> list[str] | None:
        from robustart.bench.run import work
        from robustart.engine.execute import Resources

        if not workers:
            work(jobs, retries=retries, resources=Resources(progress=False), chunk=None, where="local", run=run)
            return
        gpus = gpu_count()
        threads = options.get("threads") or (None if gpus else max(1, (os.cpu_count() or 1) // workers))
        with tempfile.TemporaryDirectory(prefix="robustart-bench-") as tmp:
            def start(i: int) -> _Process:
                path = os.path.join(tmp, f"worker-{i}-{os.urandom(4).hex()}.pkl")
                with open(path, "wb") as f:
                    pickle.dump((jobs, retries, threads, f"local worker {i}", run), f)
                env = dict(os.environ)
                if gpus:
                    env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
                # stderr is read only once the worker has ended (its last line says why it failed);
                # a file, so a long run's warnings never fill a pipe
                err = tempfile.TemporaryFile(dir=tmp)
                proc = subprocess.Popen([sys.executable, "-m", "robustart.bench.executors.local", path], env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
                proc.stderr = _Rewound(err)
                return _Process(proc)

            return supervise(jobs, n=workers, start=start, retries=retries, view=view, run=run)


class _Rewound:
    """A worker's stderr file, read from its start."""

    def __init__(self, f):
        self.f = f

    def read(self) -> bytes:
        self.f.seek(0)
        return self.f.read()


EXECUTOR = LocalExecutor()

if __name__ == "__main__":
    main(sys.argv[1:])
