"""The `ray` executor: each unit (job, shard) is a Ray task; the driver alone writes the store.

A task computes its shard into a scratch store in the worker's temporary folder (the engine's
own code path, so the records are those of any other run) and sends back the shard's table as
Arrow IPC bytes with the meta fields its run adds (versions, device, the noise's job meta and
checks); nothing needs a filesystem shared with the driver for results. The driver holds the
units' claims in the store while their tasks run, so two runs of one plan (on any executors)
compute each unit once. Ray retries a task whose worker process died (`max_retries`); a task
that raises is recorded as a failed attempt and submitted again, up to `retries` times.
"""

from __future__ import annotations

import os
import socket

from robustart.bench.executors import Executor
from robustart.errors import RobustartError

# meta.json fields that describe the job's layout or state: the driver's writer owns those
_OWN = {"format", "key", "config", "created", "seed", "layout", "shard_size", "records", "runs", "status", "shards",
        "metrics", "started", "finished", "checks", "data_sha256"}
_RESOURCES = None  # one per Ray worker process: a model built once, clean logits shared by its tasks


def compute_unit(job, shard: int, threads: int) -> dict:
    """Run on a Ray worker: shard `shard` of `job`, returned as Arrow IPC bytes + meta fields."""
    import dataclasses
    import shutil
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from robustart.engine.execute import Resources, execute
    from robustart.results.store import ResultsStore, shard_name

    global _RESOURCES
    if _RESOURCES is None:
        _RESOURCES = Resources(progress=False)
    torch.set_num_threads(max(1, threads))
    scratch = tempfile.mkdtemp(prefix="robustart-unit-")
    try:
        res = execute(dataclasses.replace(job, store=scratch), [shard], progress=False, resources=_RESOURCES)
        store = ResultsStore(scratch)
        table = pq.read_table(store.records_dir(job.key, res.meta) / shard_name(shard))
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        meta = res.meta
        run = dict(meta["runs"][-1])
        run.update(host=socket.gethostname(), pid=os.getpid())
        return {"shard": shard, "table": sink.getvalue().to_pybytes(), "run": run, "checks": meta.get("checks"),
                "meta": {k: v for k, v in meta.items() if k not in _OWN}}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def check_node(specs: list[dict]) -> list[str]:
    """Run on each node: what of the plan's data and weights does not resolve here."""
    from robustart.data.sources import DataSource
    from robustart.engine.plan import open_data

    problems = []
    for s in specs:
        if s["kind"] == "data":
            try:
                _, samples = open_data(s["data"], s["data_root"], s["limit"], s["classes"])
            except Exception as e:
                problems.append(f"dataset {s['data'] or 'built-in sample'}: {e}")
                continue
            if DataSource.fingerprint(samples) != s["fingerprint"]:
                problems.append(f"dataset {s['data']}: its files differ from the driver's (another fingerprint)")
        elif not os.path.isfile(s["path"]):
            from robustart.zoo.build import verified_weights

            try:
                _, sha = verified_weights(s["entry"], progress=False)
            except Exception as e:
                problems.append(f"weights of {s['entry'].name!r}: {s['path']} is not there and cannot be fetched ({e})")
                continue
            if sha != s["sha256"]:
                problems.append(f"weights of {s['entry'].name!r}: sha256 {sha} here, {s['sha256']} on the driver")
    return problems


class RayExecutor(Executor):
    name = "ray"
    help = "Ray tasks on a running cluster (--address / RAY_ADDRESS) or a local one; the driver writes the store"
    extra = "ray"
    options = {"address": "the cluster (default: RAY_ADDRESS, else a local cluster)",
               "num_cpus": "CPUs of a local cluster", "num_gpus": "GPUs of a local cluster",
               "cpus_per_task": "CPUs per unit (default 1)",
               "gpus_per_task": "GPUs per unit (default 1 when the cluster has GPUs, else 0)"}

    def run(self, jobs, *, workers, retries, options, view, run) -> list[str] | None:
        import ray

        started = False
        if not ray.is_initialized():
            address = options.get("address") or os.environ.get("RAY_ADDRESS")
            kw = {"address": address} if address else {"num_cpus": options.get("num_cpus") or workers,
                                                       "num_gpus": options.get("num_gpus")}
            try:
                ray.init(log_to_driver=False, configure_logging=False, **kw)
            except ConnectionError as e:
                raise RobustartError(f"cannot reach the Ray cluster at {address!r} ({e}); start it with "
                                     "`ray start --head`, or leave --address out for a local cluster.") from None
            started = True
        try:
            self._check_nodes(ray, jobs)
            self._run(ray, jobs, retries, options, view, run)
        finally:
            if started:
                ray.shutdown()

    def _check_nodes(self, ray, jobs) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        specs, seen = [], set()
        for j in jobs:
            d = ("data", j.data, j.data_root, j.limit, j.classes, j.fingerprint)
            if d not in seen:
                seen.add(d)
                specs.append({"kind": "data", "data": j.data, "data_root": j.data_root, "limit": j.limit,
                              "classes": j.classes, "fingerprint": j.fingerprint})
            w = ("weights", j.weights)
            if w not in seen:
                seen.add(w)
                specs.append({"kind": "weights", "path": j.weights[0], "sha256": j.weights[1], "entry": j.entry})
        check = ray.remote(num_cpus=0)(check_node)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(specs)
                for n in nodes]
        for n, problems in zip(nodes, ray.get(refs)):
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise RobustartError(f"Ray node {n.get('NodeManagerAddress')} ({n['NodeID'][:12]}): {problems[0]}{more}. "
                                     "Put the data and weights at the same paths on every node.")

    def _run(self, ray, jobs, retries, options, view, run) -> None:
        import pyarrow as pa

        from robustart.bench.run import attempts, describe, missing_shards, record_failure
        from robustart.engine.execute import Resources, _metrics
        from robustart.results.store import ResultsStore
        from robustart.results.writer import ShardWriter

        cpus = int(options.get("cpus_per_task") or 1)
        gpus = options.get("gpus_per_task")
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0
        task = ray.remote(compute_unit).options(num_cpus=cpus, num_gpus=gpus, max_retries=retries)
        res = Resources(progress=False)
        writers, pending, refs = {}, {}, {}
        byk = {j.key: j for j in jobs}
        try:
            while True:
                waiting = False
                for job in jobs:  # claim what is free, and submit it
                    store = ResultsStore(job.store)
                    todo = [s for s in missing_shards(store, job) if attempts(store, job.key, s, run) <= retries
                            and (job.key, s) not in refs.values()]
                    if not todo:
                        continue
                    w = writers.get(job.key)
                    if w is None:
                        w = ShardWriter(store, job.key)
                    got = w.claim_shards(todo, wait=False)
                    waiting = waiting or len(got) < len(todo)
                    if not got:
                        continue
                    if job.key not in writers:
                        w.open(job.config, n=job.n, shard_size=job.shard_size, seed=job.seed,
                               extra={"data_sha256": job.data_sha256})
                        writers[job.key] = w
                        pending[job.key] = {"begun": False, "checks": None, "shards": set()}
                    jref = ray.put(job)
                    for s in got:
                        refs[task.remote(jref, s, cpus)] = (job.key, s)
                        pending[job.key]["shards"].add(s)
                if not refs:
                    if not waiting:
                        return
                    import time

                    time.sleep(0.5)  # units another live run holds: wait for them
                    continue
                done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
                for ref in done:
                    key, s = refs.pop(ref)
                    job, w, p = byk[key], writers[key], pending[key]
                    _, samples = res.dataset(job)

                    def ids(i, job=job, samples=samples):
                        lo, hi = job.shard_bounds(i)
                        return [x.id for x in samples[lo:hi]]
                    try:
                        out = ray.get(ref)
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except Exception as e:
                        cause = getattr(e, "cause", None) or e
                        record_failure(ResultsStore(job.store), key, s, describe(cause) if cause is not e else
                                       f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", "ray", run)
                        p["shards"].discard(s)
                        self._maybe_end(w, p, key, ids, writers, pending)
                        continue
                    table = pa.ipc.open_stream(out["table"]).read_all()
                    if not p["begun"]:
                        w.begin({**out["run"], "executor": "ray", "shards": sorted(p["shards"]), "computed": []},
                                **out["meta"])
                        p["begun"] = True
                    w.write_table(s, table, expected=ids(s))
                    w.run["computed"].append(s)
                    p["checks"] = out["checks"]
                    p["shards"].discard(s)
                    self._maybe_end(w, p, key, ids, writers, pending)
        except BaseException:
            for ref in refs:
                ray.cancel(ref, force=True)
            for w in writers.values():
                if w.run is not None:
                    w.interrupt()
                w.release()
            raise

    @staticmethod
    def _maybe_end(w, p, key, ids, writers, pending) -> None:
        """A job's submitted units are all back: end the driver's run of it and let its claims go."""
        from robustart.engine.execute import _metrics

        if p["shards"]:
            return
        if p["begun"]:
            w.end(ids, checks=p["checks"], metrics=_metrics)
        w.release()
        del writers[key], pending[key]


EXECUTOR = RayExecutor()
