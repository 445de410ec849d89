"""Results store integrity: a job is complete only when its records prove it; concurrent runs,
interrupted --force runs and damaged files never leave wrong numbers; names never become paths;
changed inputs never reuse a job. Real lite0 weights, real sample images, real processes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robustart.cli import app
from robustart.engine.evaluate import evaluate
from robustart.errors import RobustartError
from robustart.results.store import ResultsStore

runner = CliRunner()


def _cmd(store, data, limit, shard_size, *extra, model="efficientnet_lite0", batch=4):
    return [sys.executable, "-m", "robustart.cli", "eval", "--model", model, "--data", str(data), "--limit",
            str(limit), "--shard-size", str(shard_size), "--batch-size", str(batch), "--workers", "0",
            "--store", str(store), "--json", *extra]


def _ids(sample: Path, n: int) -> list[str]:
    return sorted(p.name for p in sample.glob("*.JPEG"))[:n]


def _wait(cond, proc, what, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.stderr.read()}")
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- concurrent runs


def test_concurrent_runs_of_one_job_store_each_sample_once(imagenet_sample, tmp_path):
    """Two runs started together with shard sizes 4 and 8, then a --force started while another
    run is writing (paused after its first shard, so it surely is): each store ends with one
    record per sample and a serial run's metrics."""
    n = 24
    serial = evaluate("efficientnet_lite0", imagenet_sample, limit=n, store=tmp_path / "serial", progress=False,
                      workers=0)

    s1 = ResultsStore(tmp_path / "together")
    procs = [subprocess.Popen(_cmd(s1.root, imagenet_sample, n, size), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for size in (4, 8)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    res = [json.loads(o) for o, _ in outs]
    assert res[0]["key"] == res[1]["key"] == serial.key
    assert sorted(r["reused"] for r in res) == [False, True]  # one computed it, the other reused it
    assert res[0]["n"] == res[1]["n"] == n
    assert res[0]["metrics"] == res[1]["metrics"] == serial.to_json()["metrics"]
    state = s1.check(serial.key, level="read")
    assert state.status == "complete" and not state.problems
    assert list(s1.read_records(serial.key)["sample_id"]) == _ids(imagenet_sample, n)

    s2 = ResultsStore(tmp_path / "forced")
    a = subprocess.Popen(_cmd(s2.root, imagenet_sample, n, 4), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    _wait(lambda: s2.keys() and len(s2.shard_indices(s2.keys()[0])) >= 1, a, "the first shard")
    a.send_signal(signal.SIGSTOP)  # a slow writer
    b = subprocess.Popen(_cmd(s2.root, imagenet_sample, n, 8, "--force"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        said = b.stderr.readline()
        assert "is being computed by pid" in said and "waiting" in said, said  # it says whom it waits for
        assert len(s2.shard_indices(serial.key)) < n // 4  # nothing written beside the paused run
    finally:
        a.send_signal(signal.SIGCONT)
    (out_a, err_a), (out_b, err_b) = a.communicate(timeout=600), b.communicate(timeout=600)
    assert a.returncode == 0 and b.returncode == 0, (err_a, err_b)
    ra, rb = json.loads(out_a), json.loads(out_b)
    assert not ra["reused"] and not rb["reused"]
    assert ra["metrics"] == rb["metrics"] == serial.to_json()["metrics"]
    meta = s2.read_meta(serial.key)
    assert meta["layout"]["shard_size"] == 8 and meta["records"] != "records"  # the forced generation
    assert s2.check(serial.key, level="read").status == "complete"
    assert list(s2.read_records(serial.key)["sample_id"]) == _ids(imagenet_sample, n)
    job_dir = s2.job_dir(serial.key)
    assert sorted(p.name for p in job_dir.iterdir() if p.name != "claims") == ["meta.json", meta["records"]]
    assert not list((job_dir / "claims").glob("*.claim"))  # every claim released


# --------------------------------------------------------------------------- interrupted --force


MODEL = "efficientnet_lite0@w8a8:calib=2"


def _phase(store: ResultsStore, key: str, phase: str):
    d = store.job_dir(key)

    def new_generation():
        return [p for p in d.glob("records-*") if p.is_dir()]

    if phase == "calibration":  # the new generation's folder is there; its meta comes after calibration
        return lambda: bool(new_generation()) and not list(d.glob("meta-*.json"))
    return lambda: bool(list(d.glob("meta-*.json"))) and any(len(list(g.glob("shard-*.parquet"))) >= 1
                                                            for g in new_generation())


def test_interrupted_force_leaves_the_previous_result_intact(imagenet_sample, tmp_path):
    """kill -9 and Ctrl-C of `eval --force` before it touches the job (waiting for its claim),
    while the quantized form calibrates, and between shards: the previous result stays whole and
    is reused; the unfinished generation is dropped by the next run of the job."""
    from robustart import settings
    from robustart.results import claims as C

    base = ResultsStore(tmp_path / "base")
    first = evaluate(MODEL, imagenet_sample, limit=6, shard_size=2, batch_size=2, workers=0, store=base,
                     progress=False)
    key, original = first.key, first.records
    before = base.read_meta(key)
    stores = {}

    def start(phase, sig):
        st = stores[phase, sig] = ResultsStore(tmp_path / f"{phase}-{sig.name}")
        shutil.copytree(base.root, st.root)
        # SIGINT as a terminal's Ctrl-C sends it, even where this test runs with SIGINT ignored (a
        # background job of a non-interactive shell), which the child would inherit
        return subprocess.Popen(_cmd(st.root, imagenet_sample, 6, 2, "--force", model=MODEL, batch=1),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    sigs = (signal.SIGKILL, signal.SIGINT)
    for f in (settings.home() / "quant").glob("*.pt"):
        f.unlink()  # so the forced runs calibrate again
    for phase in ("before", "calibration", "between-shards"):
        held = []
        procs = []
        for sig in sigs:
            proc = start(phase, sig)
            procs.append(proc)
            if phase == "before":  # another process holds the job: the run waits before anything
                held.append(C.acquire(stores[phase, sig].claims_dir(key), "job"))
        try:
            for sig, proc in zip(sigs, procs):
                if phase == "before":
                    assert "waiting" in proc.stderr.readline()
                else:
                    _wait(_phase(stores[phase, sig], key, phase), proc, phase)
                proc.send_signal(sig)
        finally:
            for proc in procs:
                proc.wait(timeout=300)
            for c in held:
                c.release()
        for sig, proc in zip(sigs, procs):
            st = stores[phase, sig]
            assert proc.returncode != 0, (phase, sig.name)
            state = st.check(key, level="read")
            assert state.status == "complete", (phase, sig.name, state.problems)
            meta = st.read_meta(key)
            assert meta["records"] == before["records"] and meta["shards"] == before["shards"], (phase, sig.name)
            assert st.read_records(key).equals(original)
            assert evaluate(MODEL, imagenet_sample, limit=6, store=st, progress=False).reused
    # the next run of the job (here a plain one that finds a shard deleted) drops what was left over
    st = stores["between-shards", signal.SIGINT]
    assert list(st.job_dir(key).glob("records-*")) and list(st.job_dir(key).glob("meta-*.json"))
    st.shard_path(key, 1).unlink()
    fixed = evaluate(MODEL, imagenet_sample, limit=6, batch_size=2, workers=0, store=st, progress=False)
    assert not fixed.reused and fixed.records[["sample_id", "pred"]].equals(original[["sample_id", "pred"]])
    assert not list(st.job_dir(key).glob("records-*")) and not list(st.job_dir(key).glob("meta-*"))


# --------------------------------------------------------------------------- damage


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A store with two finished jobs: A (16 images, shards of 4) and B (8 images, shards of 4)."""
    sample = os.environ.get("ROBUSTART_IMAGENET_SAMPLE")
    if not sample:
        pytest.skip("ROBUSTART_IMAGENET_SAMPLE is not set")
    root = tmp_path_factory.mktemp("pristine")
    st = ResultsStore(root / "store")
    a = evaluate("efficientnet_lite0", sample, limit=16, shard_size=4, batch_size=8, workers=0, store=st,
                 progress=False)
    b = evaluate("efficientnet_lite0", sample, limit=8, shard_size=4, batch_size=8, workers=0, store=st,
                 progress=False)
    return st, a.key, b.key, a.records


def _truncate(st, a, b):
    p = st.shard_path(a, 1)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


DAMAGE = {
    "deleted shard": (lambda st, a, b: st.shard_path(a, 2).unlink(), "shard-00002.parquet is missing"),
    "truncated shard": (_truncate, "shard-00001.parquet has"),
    "duplicated shard": (lambda st, a, b: shutil.copy(st.shard_path(a, 0), st.shard_path(a, 3)), "shard-00003"),
    "extra shard": (lambda st, a, b: shutil.copy(st.shard_path(a, 0), st.shard_path(a, 4)), "unlisted"),
    "foreign shard": (lambda st, a, b: shutil.copy(st.shard_path(b, 0), st.shard_path(a, 2)), "shard-00002"),
    "garbage meta": (lambda st, a, b: st.meta_path(a).write_text("{not json"), "not JSON"),
    "empty meta": (lambda st, a, b: st.meta_path(a).write_text(""), "empty"),
    "[] meta": (lambda st, a, b: st.meta_path(a).write_text("[]"), "not a job's meta"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_job_is_named_contained_and_recomputed(pristine, imagenet_sample, tmp_path, case):
    src, a, b, original = pristine
    st = ResultsStore(tmp_path / "store")
    shutil.copytree(src.root, st.root)
    damage, reason = DAMAGE[case]
    damage(st, a, b)

    r = runner.invoke(app, ["results", "list", "--store", str(st.root), "--json"])
    assert r.exit_code == 0, r.output
    rows = {x["key"]: x for x in json.loads(r.stdout)}
    assert rows[a]["status"] == "damaged" and rows[b]["status"] == "complete" and rows[b]["n_done"] == 8
    r = runner.invoke(app, ["results", "list", "--store", str(st.root)])
    assert r.exit_code == 0 and f"damaged: {a}" in r.output
    r = runner.invoke(app, ["results", "show", b[:8], "--store", str(st.root)])
    assert r.exit_code == 0 and "8 of 8" in r.output
    r = runner.invoke(app, ["results", "show", a[:8], "--store", str(st.root)])
    assert r.exit_code == 2 and "error:" in r.output and "damaged" in r.output and "Traceback" not in r.output

    r = runner.invoke(app, ["results", "verify", "--store", str(st.root), "--json"])
    assert r.exit_code == 1
    found = {j["key"]: j for j in json.loads(r.stdout)["jobs"]}
    assert found[b]["problems"] == [] and any(reason in p for p in found[a]["problems"]), found[a]

    res = evaluate("efficientnet_lite0", imagenet_sample, limit=16, batch_size=8, workers=0, store=st, progress=False)
    assert res.key == a and not res.reused and res.meta["status"] == "complete"
    assert res.records.equals(original) if case.endswith("meta") else \
        res.records[["sample_id", "pred", "correct"]].equals(original[["sample_id", "pred", "correct"]])
    assert all(s.status == "complete" and not s.problems for s in st.verify())


@pytest.mark.parametrize("case", ["truncated shard", "foreign shard", "garbage meta", "[] meta"])
def test_report_leaves_a_damaged_job_out_and_names_it(pristine, tmp_path, case):
    src, a, b, _ = pristine
    st = ResultsStore(tmp_path / "store")
    shutil.copytree(src.root, st.root)
    DAMAGE[case][0](st, a, b)
    r = runner.invoke(app, ["report", "--store", str(st.root), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    assert f"job {a} is damaged and left out" in r.output and "1 complete job shown" in \
        (tmp_path / "rep" / "report.html").read_text()


def test_verify_repair_recomputes_or_removes(pristine, tmp_path):
    src, a, b, original = pristine
    st = ResultsStore(tmp_path / "store")
    shutil.copytree(src.root, st.root)
    _truncate(st, a, b)
    st.meta_path(b).write_text("[]")  # its config is lost: nothing can remake it
    r = runner.invoke(app, ["results", "verify", "--repair", "--store", str(st.root), "--json"])
    assert r.exit_code == 0, r.output
    jobs = {j["key"]: j for j in json.loads(r.stdout)["jobs"]}
    assert jobs[a]["repair"] == "recomputed" and jobs[b]["repair"].startswith("removed")
    assert st.keys() == [a] and st.check(a, level="read").status == "complete"
    assert st.read_records(a)[["sample_id", "pred"]].equals(original[["sample_id", "pred"]])


# --------------------------------------------------------------------------- options and names


@pytest.mark.parametrize("args", [["--shard-size", "-1"], ["--shard-size", "0"], ["--workers", "-1"],
                                  ["--limit", "0"], ["--limit", "-5"], ["--batch-size", "0"],
                                  ["--batch-size", "-3"]])
def test_a_bad_numeric_option_is_one_error_line_and_writes_nothing(tmp_path, args):
    store = tmp_path / "store"
    r = runner.invoke(app, ["eval", "--store", str(store), *args])
    assert r.exit_code == 2 and "error:" in r.output and args[0] in r.output and "Traceback" not in r.output
    assert not store.exists()
    with pytest.raises(RobustartError, match=args[0]):
        evaluate("efficientnet_lite0", store=store, progress=False,
                 **{args[0][2:].replace("-", "_"): int(args[1])})
    assert not store.exists()


def _files(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*")}


def test_entry_and_job_names_never_write_outside_their_folder(tmp_path, monkeypatch):
    """A local entry named `../../x` quantized (its cache file), and `nas train --name` with
    separators, `..` or an absolute path: nothing is written outside ROBUSTART_HOME."""
    from safetensors.torch import save_file

    import robustart
    from robustart import settings
    from robustart.nas.cli import app as nas_app
    from robustart.paths import file_name, inside
    from robustart.zoo.weights import file_sha256

    top = tmp_path / "a" / "b"
    home = top / "home"
    monkeypatch.setenv("ROBUSTART_HOME", str(home))
    net = robustart.load_model("efficientnet_lite0").net
    (home / "zoo").mkdir(parents=True)
    w = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(w))
    entry = {"name": "../../x", "arch": "tf_efficientnet_lite0", "family": "cnn", "crop_pct": 0.875,
             "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3, "input_size": [3, 224, 224],
             "weights": {"file": str(w), "sha256": file_sha256(w)}}
    (home / "zoo" / "evil.json").write_text(json.dumps(entry))
    outside = _files(tmp_path) - _files(home)
    res = evaluate("evil@w8a8:calib=2", None, limit=2, progress=False)
    assert res.meta["status"] == "complete"
    assert _files(tmp_path) - _files(home) == outside  # all it wrote is under ROBUSTART_HOME
    cache = list((settings.home() / "quant").glob("*.pt"))
    assert len(cache) == 1 and cache[0].parent == home / "quant" and ".." not in cache[0].name
    for name in ("a/b", "a\\b", "..", "../x", "/abs/x", "C:\\x"):
        assert inside(home, file_name(name) + ".pt").parent == home
        r = runner.invoke(nas_app, ["train", "--name", name, "--out", str(tmp_path / "nas"), "--epochs", "1"])
        assert r.exit_code == 2 and "--name" in r.output and "Traceback" not in r.output, (name, r.output)
        assert not (tmp_path / "nas").exists() and not list(tmp_path.glob("*.json"))


# --------------------------------------------------------------------------- inputs in the key


def test_a_replaced_image_gives_a_new_key_and_verify_data_sees_contents(imagenet_sample, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    names = _ids(imagenet_sample, 3)
    for n in names:
        shutil.copy2(imagenet_sample / n, data / n)
    store = tmp_path / "store"
    first = evaluate("efficientnet_lite0", data, store=store, progress=False, workers=0)
    victim = data / names[1]
    st = victim.stat()
    other = (imagenet_sample / _ids(imagenet_sample, 4)[3]).read_bytes()
    body = (other + b"\0" * st.st_size)[: st.st_size]  # another image, cut or padded to the same size
    victim.write_bytes(body)
    assert victim.stat().st_size == st.st_size
    second = evaluate("efficientnet_lite0", data, store=store, progress=False, workers=0)
    assert second.key != first.key and not second.reused

    # the same size and modification time: only content hashes see it
    checked = evaluate("efficientnet_lite0", data, store=store, progress=False, workers=0, verify_data=True)
    assert checked.key == second.key and not checked.reused  # computed without hashes: recomputed
    again = evaluate("efficientnet_lite0", data, store=store, progress=False, workers=0, verify_data=True)
    assert again.reused
    t = victim.stat().st_mtime_ns
    victim.write_bytes((imagenet_sample / names[1]).read_bytes()[: st.st_size])
    os.utime(victim, ns=(t, t))
    assert evaluate("efficientnet_lite0", data, store=store, progress=False, workers=0).reused
    redo = evaluate("efficientnet_lite0", data, store=store, progress=False, workers=0, verify_data=True)
    assert redo.key == second.key and not redo.reused


# --------------------------------------------------------------------------- shard claims


def _execute_shards(job, shards):
    from robustart.engine.execute import execute

    return execute(job, shards, progress=False).meta["runs"][-1]["resumed_shards"]


def test_workers_with_overlapping_shards_write_each_shard_once(tmp_path):
    """An executor's unit is (job, shard): two processes given overlapping shard lists of one job
    claim their shards, so each shard is computed once and the last to end completes the job."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from robustart.engine.plan import plan

    job = plan("efficientnet_lite0", None, store=tmp_path / "s", shard_size=1, progress=False).jobs[0]
    assert job.n_shards == 4
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_execute_shards, job, s) for s in ([0, 1, 2], [1, 2, 3])]
        resumed = sorted(f.result(timeout=600) for f in futures)
    assert resumed == [0, 3]  # the second waited for the shared shards, then found them (and the first's) done
    st = ResultsStore(tmp_path / "s")
    state = st.check(job.key, level="read")
    assert state.status == "complete" and not state.problems
    meta = st.read_meta(job.key)
    assert len(meta["runs"]) == 2 and meta["metrics"]["n"] == 4
    assert st.read_records(job.key)["sample_id"].is_unique


def test_claims_exclude_live_holders_and_take_over_dead_or_stale_ones(tmp_path):
    """A claim held by a live process is refused; once the holder is killed (-9) it is taken over
    at once; an unreadable claim is taken over once its lease has passed; a holder whose claim
    was taken over notices."""
    from robustart.results import claims as C

    folder = tmp_path / "claims"
    code = ("import sys, time; from pathlib import Path; from robustart.results.claims import acquire; "
            "c = acquire(Path(sys.argv[1]), 'job'); print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        got = C.try_acquire(folder, "job")
        assert isinstance(got, C.Holder) and got.pid == holder.pid and not got.stale()
        assert C.acquire(folder, "job", wait=False) is None
        shard = C.try_acquire(folder, "shard-00001")
        assert isinstance(shard, C.Claim)  # another unit is free
        shard.release()
    finally:
        holder.kill()
        holder.wait()
    mine = C.try_acquire(folder, "job")
    assert isinstance(mine, C.Claim) and not mine.lost
    assert json.loads((folder / "job.claim").read_text())["pid"] == os.getpid()

    (folder / "job.claim").write_text("{half")  # a broken claim: stale only once its lease passed
    assert isinstance(C.try_acquire(folder, "job", lease=60), C.Holder)
    assert not mine.refresh() and mine.lost  # its holder sees it lost
    old = time.time() - 3600
    os.utime(folder / "job.claim", (old, old))
    other = C.try_acquire(folder, "job")
    assert isinstance(other, C.Claim)
    mine.release()  # releasing a lost claim leaves the new holder's alone
    assert (folder / "job.claim").exists()
    other.release()
    assert not list(folder.iterdir())  # no temp or marker files left
