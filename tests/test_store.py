"""Results store and engine: job keys, reuse, --force, atomic files, resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from robustart.engine.evaluate import evaluate
from robustart.results.store import ResultsStore, atomic_write_json, stable_hash


def test_stable_hash_ignores_key_order_and_sees_values():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_atomic_write_leaves_no_temp_files(tmp_path):
    p = tmp_path / "x" / "meta.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert sorted(os.listdir(p.parent)) == ["meta.json"]


def test_job_is_reused_then_forced(tmp_path):
    store = ResultsStore(tmp_path)
    first = evaluate("efficientnet_lite0", store=store, progress=False)
    assert not first.reused and first.meta["status"] == "complete"
    shard = store.shard_path(first.key, 0)
    mtime = shard.stat().st_mtime_ns
    again = evaluate("efficientnet_lite0", store=store, progress=False)
    assert again.reused and again.key == first.key
    assert shard.stat().st_mtime_ns == mtime  # nothing recomputed
    forced = evaluate("efficientnet_lite0", store=store, force=True, progress=False)
    assert not forced.reused and forced.key == first.key
    assert forced.records.equals(first.records)  # deterministic
    other = evaluate("efficientnet_lite0", store=store, limit=2, progress=False)
    assert other.key != first.key and len(other.records) == 2
    assert set(store.keys()) == {first.key, other.key}


def test_meta_records_provenance(tmp_path):
    res = evaluate("efficientnet_lite0", store=tmp_path, progress=False, seed=7)
    meta = json.loads((tmp_path / "jobs" / res.key / "meta.json").read_text())
    cfg = meta["config"]
    assert cfg["model"]["name"] == "efficientnet_lite0"
    assert cfg["weights_sha256"] == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    assert cfg["noise"] == {"name": "clean"}
    assert cfg["dataset"]["n"] == 4 and len(cfg["dataset"]["fingerprint"]) == 16
    assert cfg["model"]["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert stable_hash(cfg) == res.key
    assert meta["seed"] == 7
    for k in ("python", "torch", "timm", "robustart", "pillow"):
        assert meta["versions"][k]
    assert meta["device"]["type"] == "cpu"
    assert meta["started"] <= meta["finished"]
    rec = res.records
    assert list(rec.columns[:7]) == ["sample_id", "label", "pred", "top5", "correct", "prob", "margin"]
    assert (rec["pred"] == rec["top5"].map(lambda t: t[0])).all()
    assert ((rec["margin"] > 0) == rec["correct"]).all()  # margin: true logit minus best other


def _assert_same_records(a, b):
    import numpy as np

    assert list(a.columns) == list(b.columns)
    exact = [c for c in a.columns if c not in ("prob", "margin")]
    assert a[exact].astype(str).equals(b[exact].astype(str))
    for c in ("prob", "margin"):
        np.testing.assert_allclose(a[c].to_numpy(), b[c].to_numpy(), rtol=1e-4, atol=1e-5)


def test_corrupt_shard_is_recomputed(tmp_path):
    store = ResultsStore(tmp_path)
    res = evaluate("efficientnet_lite0", store=store, shard_size=2, progress=False)
    good = store.read_records(res.key)
    store.shard_path(res.key, 1).write_bytes(b"not parquet")
    meta = store.read_meta(res.key)
    meta["status"] = "running"
    store.write_meta(res.key, meta)
    again = evaluate("efficientnet_lite0", store=store, shard_size=2, progress=False)
    assert not again.reused
    # Shard 1 was recomputed in a smaller batch: predictions are identical, float columns agree
    # to rounding (CPU conv kernels may pick another algorithm for another batch size).
    _assert_same_records(again.records, good)
    assert again.meta["runs"][-1]["resumed_shards"] == 1


def _shards(store, key):
    return store.shard_indices(key) if store.records_dir(key).is_dir() else []


def test_killed_run_resumes_without_losing_or_duplicating(imagenet_sample, tmp_path):
    """Kill `robustart eval` midway (SIGKILL), run it again, check every record is there once."""
    store = ResultsStore(tmp_path / "store")
    n, S = 240, 8
    cmd = [sys.executable, "-m", "robustart.cli", "eval", "--model", "efficientnet_lite0",
           "--data", str(imagenet_sample), "--limit", str(n), "--shard-size", str(S),
           "--batch-size", "4", "--workers", "0", "--store", str(store.root), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    key = None
    try:
        while time.time() < deadline:
            keys = store.keys()
            if keys and len(_shards(store, keys[0])) >= 3:
                key = keys[0]
                break
            assert proc.poll() is None, "run ended before it could be interrupted: " + proc.stderr.read().decode()
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert key, "no shards appeared in time"
    before = {i: store.shard_path(key, i).stat().st_mtime_ns for i in _shards(store, key)}
    assert 3 <= len(before) < n // S
    assert store.read_meta(key)["status"] == "running"

    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["key"] == key and summary["n"] == n and not summary["reused"]

    meta = store.read_meta(key)
    assert meta["status"] == "complete"
    assert meta["runs"][-1]["resumed_shards"] == len(before)
    for i, mtime in before.items():  # shards finished before the kill were kept, not redone
        assert store.shard_path(key, i).stat().st_mtime_ns == mtime
    rec = store.read_records(key)
    expected = sorted(p.name for p in imagenet_sample.glob("*.JPEG"))[:n]
    assert list(rec["sample_id"]) == expected  # nothing lost, nothing duplicated, in order
    assert not [p for p in store.records_dir(key).iterdir() if not p.name.endswith(".parquet")]

    # the resumed job's records equal an uninterrupted run's
    fresh = evaluate("efficientnet_lite0", imagenet_sample, limit=n, store=tmp_path / "fresh", progress=False)
    assert fresh.key == key
    cols = ["sample_id", "label", "pred", "correct"]
    assert rec[cols].equals(fresh.records[cols])
    assert (abs(rec["prob"] - fresh.records["prob"]) < 1e-4).all()
