"""Running a plan's units (job, shard) with each executor: the records of a serial `evaluate`,
whatever ran them; workers and drivers killed with SIGKILL lose nothing and compute nothing
twice; two runs of one plan at once compute each unit once; failed units are recorded, retried
and reported. Real lite0/lite1 weights, real sample images, a real local Ray cluster, real
subprocesses (submitit's local executor runs the Slurm workers through the same pickling path)."""

import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import robustart
from robustart.bench.run import run_plan, unit_failures
from robustart.engine.plan import plan
from robustart.errors import MissingExtraError, RobustartError
from robustart.results.store import ResultsStore

MODELS = ("efficientnet_lite0", "efficientnet_lite1")
NOISES = ("clean", "pgd:eps=1/255,steps=1", "corruption:gaussian_noise:1")
N = 24
EXACT = ["sample_id", "label", "pred", "top5", "correct", "status", "clean_pred", "clean_correct", "success"]


def make_jobs(sample, store, models=MODELS, noises=NOISES, shard_size=8):
    jobs = []
    for m in models:
        jobs += plan(m, sample, noise=list(noises), limit=N, shard_size=shard_size, store=store, progress=False,
                     workers=0, batch_size=8).jobs
    return jobs


@pytest.fixture(scope="module")
def sample():
    value = os.environ.get("ROBUSTART_IMAGENET_SAMPLE")
    if not value or not any(Path(value).glob("n*_*.JPEG")):
        pytest.skip("ROBUSTART_IMAGENET_SAMPLE is not set (point it at a flat <wnid>_<name>.JPEG folder)")
    return Path(value)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One robustart home for the module (its fixtures outlive one test's home)."""
    return tmp_path_factory.mktemp("bench-home")


@pytest.fixture(autouse=True)
def _module_home(home, monkeypatch):
    monkeypatch.setenv("ROBUSTART_HOME", str(home))


@pytest.fixture(scope="module")
def serial(sample, home):
    """Each job of the plan by a serial `robustart.evaluate` (one shard per job): key -> records."""
    os.environ["ROBUSTART_HOME"] = str(home)
    out = {}
    for m in MODELS:
        for n in NOISES:
            r = robustart.evaluate(m, sample, noise=n, limit=N, store=home / "serial", progress=False, workers=0,
                                   batch_size=8)
            out[r.key] = r.records
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster for the module (the executor connects to it)."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local test cluster, no token
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def same_records(store: ResultsStore, serial: dict, keys) -> None:
    """Every job of `keys` complete, with the serial run's records: ids, predictions and flags
    exactly, floats to rounding. Workers run with another number of torch threads than the
    serial run (cores divided), so sums are reduced in another order: about 1e-5 on logits, which
    an attack's sign-of-gradient step can turn into about 1e-3 on the adversarial logits."""
    for key in keys:
        assert store.check(key, level="read").status == "complete", key
        got, ref = store.read_records(key), serial[key]
        tol = 1e-2 if store.read_meta(key)["config"]["noise"]["name"] == "pgd" else 1e-4
        assert list(got.columns) == list(ref.columns)
        for c in got.columns:
            if c in EXACT or not pd.api.types.is_numeric_dtype(got[c]) or pd.api.types.is_bool_dtype(got[c]):
                assert got[c].astype(str).tolist() == ref[c].astype(str).tolist(), (key, c)
            else:
                np.testing.assert_allclose(got[c].to_numpy(float), ref[c].to_numpy(float), rtol=tol, atol=tol,
                                           equal_nan=True, err_msg=f"{key} {c}")


def recorded_once(store: ResultsStore, jobs) -> None:
    for job in jobs:
        assert store.check(job.key, level="read").status == "complete", job.key
        ids = store.read_records(job.key)["sample_id"].tolist()
        assert len(ids) == job.n and len(set(ids)) == job.n


def computed_per_shard(store: ResultsStore, job) -> dict:
    """Shard -> how many runs of the job computed it (from meta.json's runs)."""
    out = {s: 0 for s in range(job.n_shards)}
    for run in store.read_meta(job.key)["runs"]:
        for s in run.get("computed", []):
            out[s] += 1
    return out


# --------------------------------------------------------------------------- the same records everywhere


@pytest.mark.parametrize("executor, workers", [("local", None), ("local", 2), ("ray", None), ("slurm", 2)],
                         ids=["in-process", "2-workers", "ray", "slurm-local"])
def test_every_executor_gives_the_serial_records(executor, workers, sample, serial, home, request):
    if executor == "ray":
        request.getfixturevalue("ray_cluster")
    store = ResultsStore(home / f"by-{executor}-{workers}")
    jobs = make_jobs(sample, store.root)
    assert sorted(j.key for j in jobs) == sorted(serial)  # the keys `eval` makes
    options = {"cluster": "local", "folder": str(home / "submitit")} if executor == "slurm" else {}
    out = run_plan(jobs, executor=executor, workers=workers, progress=False, options=options)
    assert out.failed == [] and sorted(out.complete) == sorted(serial) and out.images == len(jobs) * N
    same_records(store, serial, out.complete)
    for job in jobs:
        assert sum(computed_per_shard(store, job).values()) == job.n_shards  # each unit computed once
    if executor == "ray":  # the driver wrote every shard, and kept the workers' meta fields
        meta = store.read_meta(jobs[0].key)
        assert {r["executor"] for r in meta["runs"]} == {"ray"} and meta["runs"][0]["pid"] != os.getpid()
        assert meta["versions"]["torch"] and meta["request"]
    again = run_plan(jobs, executor=executor, workers=workers, progress=False, options=options)
    assert again.images == 0 and sorted(again.complete) == sorted(serial)  # nothing recomputed


# --------------------------------------------------------------------------- killed workers and drivers


CHEAP = dict(models=("efficientnet_lite0",), noises=("clean", "corruption:gaussian_noise:1"), shard_size=4)


def _in_thread(fn):
    box = {}

    def target():
        try:
            box["out"] = fn()
        except BaseException as e:  # re-raised in the test's thread
            box["error"] = e
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def _wait_for(cond, what, t=None, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        if t is not None and not t.is_alive():
            raise AssertionError(f"the run ended before {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _shard_holder(store: ResultsStore, jobs):
    """The pid of another process computing a unit, once one shard is already written (the
    workers are past their start-up)."""
    from robustart.results import claims as C

    if not any(store.shard_indices(j.key) for j in jobs if store.meta_path(j.key).exists()):
        return None
    for j in jobs:
        for h in C.holders(store.claims_dir(j.key)):
            if h.unit.startswith("shard-") and h.pid != os.getpid() and not h.stale():
                return h.pid
    return None


@pytest.mark.parametrize("executor", ["local", "slurm"])
def test_a_killed_worker_loses_no_unit(executor, sample, home):
    """kill -9 of a worker while it holds a unit: its claim goes stale, the unit is computed by
    the other worker or a replacement, and every sample ends recorded exactly once."""
    store = ResultsStore(home / f"kill-{executor}")
    jobs = make_jobs(sample, store.root, **CHEAP)
    options = {"cluster": "local", "folder": str(home / "submitit-kill")} if executor == "slurm" else {}
    t, box = _in_thread(lambda: run_plan(jobs, executor=executor, workers=2, progress=False, options=options))
    pid = _wait_for(lambda: _shard_holder(store, jobs), "a worker holding a unit", t)
    os.kill(pid, signal.SIGKILL)
    t.join(600)
    assert "error" not in box, box.get("error")
    out = box["out"]
    assert out.failed == [] and len(out.complete) == len(jobs)
    why = "killed by signal 9" if executor == "local" else "UncompletedJobError"  # (submitit: no result)
    assert len(out.notes) == 1 and why in out.notes[0], out.notes  # the death was noticed
    recorded_once(store, jobs)
    for job in jobs:  # no shard computed twice (the killed worker's last one may be in no run's list)
        assert max(computed_per_shard(store, job).values()) <= 1


def _ray_unit_pid():
    """The pid of a Ray worker process executing a unit (Ray titles it ray::compute_unit)."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"ray::compute_unit"):
                return int(d.name)
    return None


def test_a_killed_ray_worker_is_retried(sample, home, ray_cluster):
    """kill -9 of the Ray worker process running a unit: Ray runs the task again, and the
    driver writes each shard once."""
    store = ResultsStore(home / "kill-ray")
    jobs = make_jobs(sample, store.root, **CHEAP)
    t, box = _in_thread(lambda: run_plan(jobs, executor="ray", progress=False))
    pid = _wait_for(lambda: store.keys() and any(store.shard_indices(k) for k in store.keys()) and _ray_unit_pid(),
                    "a Ray worker running a unit", t)
    os.kill(pid, signal.SIGKILL)
    t.join(600)
    assert "error" not in box, box.get("error")
    assert box["out"].failed == [] and len(box["out"].complete) == len(jobs)
    recorded_once(store, jobs)
    for job in jobs:
        assert set(computed_per_shard(store, job).values()) == {1}


def _driver(jobs_file: Path) -> subprocess.Popen:
    code = ("import pickle, sys; from robustart.bench.run import run_plan; "
            "out = run_plan(pickle.load(open(sys.argv[1], 'rb')), progress=False); print(len(out.complete))")
    return subprocess.Popen([sys.executable, "-c", code, str(jobs_file)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_killed_driver_resumes_without_recomputing(sample, home, tmp_path):
    """The driver (a process running the plan in itself) killed with SIGKILL after some shards:
    a rerun computes only the missing shards; the finished ones are untouched."""
    store = ResultsStore(home / "kill-driver")
    jobs = make_jobs(sample, store.root, **CHEAP)
    (tmp_path / "jobs.pkl").write_bytes(pickle.dumps(jobs))
    p = _driver(tmp_path / "jobs.pkl")
    try:
        _wait_for(lambda: store.keys() and len(store.shard_indices(jobs[0].key)) >= 2 or p.poll() is not None,
                  "two shards")
        assert p.poll() is None, p.stderr.read()
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait()
    before = {(j.key, s): (store.records_dir(j.key) / f"shard-{s:05d}.parquet").stat().st_mtime_ns
              for j in jobs if store.meta_path(j.key).exists() for s in store.shard_indices(j.key)}
    assert 2 <= len(before) < sum(j.n_shards for j in jobs)
    out = run_plan(jobs, progress=False)
    assert out.failed == [] and len(out.complete) == len(jobs)
    assert out.images == sum(j.n for j in jobs) - 4 * len(before)  # only what was missing
    for (key, s), mtime in before.items():
        assert (store.records_dir(key) / f"shard-{s:05d}.parquet").stat().st_mtime_ns == mtime
    recorded_once(store, jobs)


def test_two_runs_at_once_compute_each_unit_once(sample, home, tmp_path):
    """Two runs of one plan on one store at once split its units through claims: each unit is
    computed by exactly one of them, both compute, and each waits for the other's units."""
    store = ResultsStore(home / "two-runs")
    jobs = make_jobs(sample, store.root, **CHEAP)
    (tmp_path / "jobs.pkl").write_bytes(pickle.dumps(jobs))
    procs = [_driver(tmp_path / "jobs.pkl") for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o.strip() for o, _ in outs] == [str(len(jobs))] * 2  # each saw every job complete
    recorded_once(store, jobs)
    pids = set()
    for job in jobs:
        assert set(computed_per_shard(store, job).values()) == {1}, computed_per_shard(store, job)
        pids |= {r["pid"] for r in store.read_meta(job.key)["runs"] if r.get("computed")}
    assert pids == {p.pid for p in procs}  # both computed, neither twice


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_failing_unit_is_recorded_retried_and_reported(executor, sample, home, tmp_path, request):
    """A job whose checkpoint changed since it was planned fails in every unit: each unit is
    tried retries + 1 times, its error kept in the store and in the outcome (by the worker, or
    by Ray's driver); once the cause is gone, a rerun computes it and the failure records go."""
    if executor == "ray":
        request.getfixturevalue("ray_cluster")
    store = ResultsStore(home / f"failing-{executor}")
    (job,) = make_jobs(sample, store.root, models=("efficientnet_lite0",), noises=("clean",))
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"not the planned checkpoint")
    # (another sha256 too: a process that built the planned checkpoint keeps that model, by hash)
    bad = dataclasses.replace(job, weights=(str(other), "f" * 64))
    out = run_plan([bad], executor=executor, retries=1, progress=False)
    assert out.complete == [] and out.incomplete == [job.key]
    assert sorted(f["shard"] for f in out.failed) == list(range(job.n_shards))
    assert all(f["attempts"] == 2 and "damaged" in f["error"] for f in out.failed), out.failed
    recorded = unit_failures(store, job.key)
    assert [(f["shard"], f["attempts"]) for f in recorded] == [(s, 2) for s in range(job.n_shards)]
    assert recorded[0]["history"][0]["pid"] == os.getpid()
    again = run_plan([bad], executor=executor, retries=0, progress=False)  # a new run tries again, `retries` + 1 times
    assert [(f["shard"], f["attempts"]) for f in again.failed] == [(s, 1) for s in range(job.n_shards)]
    assert [f["attempts"] for f in unit_failures(store, job.key)] == [3] * job.n_shards  # the history stays
    fixed = run_plan([job], executor=executor, retries=1, progress=False)
    assert fixed.complete == [job.key] and fixed.failed == [] and unit_failures(store, job.key) == []
    recorded_once(store, [job])


def test_unknown_executor_option_and_missing_extra(monkeypatch):
    with pytest.raises(RobustartError, match="unknown executor 'rey'. Did you mean 'ray'"):
        run_plan([], executor="rey")
    with pytest.raises(RobustartError, match="executor 'ray' has no option 'adress'.*did you mean 'address'"):
        run_plan([], executor="ray", options={"adress": "x"})
    for module, extra in (("ray", "ray"), ("submitit", "slurm")):
        monkeypatch.setitem(sys.modules, module, None)  # what Python does for a module it cannot find
        with pytest.raises(MissingExtraError, match=rf"pip install 'robustart\[{extra}\]'$"):
            run_plan([], executor={"ray": "ray", "submitit": "slurm"}[module])


def test_the_progress_view_counts_from_the_store(sample, home):
    """What the one progress view shows comes from the store, whichever process computed."""
    from robustart.bench.run import ProgressView

    store = ResultsStore(home / "by-local-None")  # left complete by the in-process run above, if it ran
    jobs = make_jobs(sample, store.root)
    if not all(store.meta_path(j.key).exists() for j in jobs):
        run_plan(jobs, progress=False)
    c = ProgressView(jobs, retries=2, enabled=False).counts()
    assert c == {"done": len(jobs), "running": 0, "failed": 0, "images": len(jobs) * N}
    meta = json.loads(store.meta_path(jobs[0].key).read_text())
    assert meta["status"] == "complete"


def test_ray_checks_data_on_every_node_first(sample, home, tmp_path, ray_cluster):
    """Data that does not resolve on a node stops the run before any unit, with one message
    naming the node and the path."""
    store = ResultsStore(home / "ray-check")
    (job,) = make_jobs(sample, store.root, models=("efficientnet_lite0",), noises=("clean",))
    gone = tmp_path / "moved-away"
    with pytest.raises(RobustartError, match=rf"^Ray node \S+ \(\w+\): dataset {gone}.*same paths on every node"):
        run_plan([dataclasses.replace(job, data=str(gone))], executor="ray", progress=False)
    assert not store.keys()  # nothing started
