"""The engine in parts: plan (config -> job specs with keys and shard layouts, no weights loaded)
and execute (a job spec -> records, any subset of its shards, in any process). Job keys change
only with the store format."""

import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest

from robustart.engine.execute import execute
from robustart.engine.plan import plan

# Job keys of store format 2 on the dataset of `keyset` below, limit 5. A key changes only with
# the store format (format 1 keys, from a fingerprint without modification times, all differ).
KEYSET_MTIME = 1_700_000_000_000_000_000
PINNED = {
    ("efficientnet_lite0", "clean", 0): ["f8f25a8989379788"],
    ("efficientnet_lite0", "pgd", 0): ["2c2f2e9f930ca89d"],
    ("efficientnet_lite0", "pgd:eps=2/255,steps=5,norm=l2", 0): ["aa5fb7e54b8ed168"],
    ("efficientnet_lite0", "fgsm:budget=small", 0): ["1ea81d78a753644f"],
    ("efficientnet_lite0", "cw", 0): ["a6185b00b820642b"],
    ("efficientnet_lite0", "square:queries=100", 0): ["1f9e7bfd91e63def"],
    ("efficientnet_lite0", "autoattack", 0): ["f66bdebf1919a2eb"],
    ("efficientnet_lite0", "transfer:src=efficientnet_lite1", 0): ["72494230ea76c456"],
    ("efficientnet_lite0", "adversarial:budget=large", 0): [
        "040dba30ec16baac", "339e3d676c69fc92", "c2d388aaa556e585", "59a86b33f7981809", "65858b6e19c76fdf",
        "d609a3be23f2da2a"],
    ("efficientnet_lite0", "corruption:glass_blur:3", 0): ["4d03e42997d3444e"],
    ("efficientnet_lite0", "corruption:fog,impl=reference,jpeg=true", 0): [
        "7a28a7e7795ba39e", "879f81439c691c44", "883d9b1e79397784", "16443f7241343d57", "d8ceb5a6a571ee86"],
    ("efficientnet_lite0", "imagenet-s:decoder=opencv,resize=pil-bicubic", 0): ["cc7b704ebc6e8489"],
    ("efficientnet_lite0", "imagenet-s:decoder=turbo-fast,geometry=square", 0): ["103902c519d0bec7"],
    ("efficientnet_lite0", "precision:bf16", 0): ["b0e6fafaceffbef8"],
    ("efficientnet_lite0", "precision:channels_last", 0): ["7b47336eb9027323"],
    ("efficientnet_lite0", "precision:w8a8,calib=2,backends=fake+cpu-int8", 0): [
        "c99a0b30f97da6c3", "8f438c8a9b46dd6e"],
    ("efficientnet_lite0", "precision:w4a4,calib=3,observer=mse,backend=fake", 0): ["b899d3db0ed3a75e"],
    ("efficientnet_lite0", "clean", 3): ["f8f25a8989379788"],
    ("efficientnet_lite0", "pgd", 3): ["2ddd36958cf7f486"],
    ("efficientnet_lite0", "pgd:eps=2/255,steps=5,norm=l2", 3): ["ee7575476559aea6"],
    ("efficientnet_lite0", "fgsm:budget=small", 3): ["eeb9c6aba8b2c7e2"],
    ("efficientnet_lite0", "cw", 3): ["2a3cbf980fa4ffba"],
    ("efficientnet_lite0", "square:queries=100", 3): ["f87a0f0aca6a5b40"],
    ("efficientnet_lite0", "autoattack", 3): ["dfe8be498f5264c1"],
    ("efficientnet_lite0", "transfer:src=efficientnet_lite1", 3): ["14708302d4be9d64"],
    ("efficientnet_lite0", "corruption:glass_blur:3", 3): ["b652da8b442198dc"],
    ("efficientnet_lite0", "corruption:fog,impl=reference,jpeg=true", 3): [
        "6ce3d7e762f5b2cb", "f6700c2df2b70f9d", "e2be0dd0c9a3137c", "2dfe45b41a4d5982", "42356766612828c2"],
    ("efficientnet_lite0", "imagenet-s:decoder=opencv,resize=pil-bicubic", 3): ["1926a5d8e05d967b"],
    ("efficientnet_lite0", "imagenet-s:decoder=turbo-fast,geometry=square", 3): ["a13014c9a76589a0"],
    ("efficientnet_lite0", "precision:bf16", 3): ["8c3c30fb92c76eaf"],
    ("efficientnet_lite0", "precision:channels_last", 3): ["c65e3682397d482e"],
    ("efficientnet_lite0@w8a8:calib=2", "clean", 0): ["cf303c1ad07cc992"],
    ("efficientnet_lite0@w8a8:calib=2", "pgd", 0): ["e23b00851193e6b3"],
    ("efficientnet_lite0@w8a8:calib=2", "clean", 3): ["cf303c1ad07cc992"],
    ("efficientnet_lite0@w8a8:calib=2", "pgd", 3): ["6a80e9c9cbe98e98"],
    ("efficientnet_lite0@binary-bnn:untrained=yes", "clean", 0): ["8113c359a990454d"],
    ("efficientnet_lite0@binary-bnn:untrained=yes", "pgd", 0): ["95d4848bdaa32311"],
    ("efficientnet_lite0@binary-bnn:untrained=yes", "clean", 3): ["8113c359a990454d"],
    ("efficientnet_lite0@binary-bnn:untrained=yes", "pgd", 3): ["ab7b190bb888cb9b"],
}


@pytest.fixture()
def keyset(tmp_path):
    """Six files in the flat ImageNet layout with fixed ids, labels and sizes: all a dataset
    fingerprint reads (they are not images, so every sample fails to decode when run)."""
    root = tmp_path / "keyset"
    root.mkdir()
    wnids = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331"]
    for i, w in enumerate(wnids):
        f = root / f"{w}_{i}.JPEG"
        f.write_bytes(bytes([i]) * (1000 + 37 * i))
        os.utime(f, ns=(KEYSET_MTIME + i, KEYSET_MTIME + i))  # the fingerprint reads modification times
    return root


@pytest.mark.parametrize("model, spec, seed", list(PINNED), ids=[f"{m}|{s}|{d}" for m, s, d in PINNED])
def test_job_keys_are_unchanged(keyset, tmp_path, model, spec, seed):
    backend = "cpu-int8" if "@w8a8" in model else "fake"
    p = plan(model, str(keyset), noise=spec, limit=5, seed=seed, store=tmp_path / "store", progress=False,
             backend=backend)
    assert [j.key for j in p.jobs] == PINNED[(model, spec, seed)]


def test_a_run_job_is_stored_under_its_pinned_key(keyset, tmp_path):
    import robustart

    res = robustart.evaluate("efficientnet_lite0", str(keyset), limit=5, store=tmp_path, progress=False)
    assert res.key == PINNED[("efficientnet_lite0", "clean", 0)][0] and (tmp_path / "jobs" / res.key / "meta.json").is_file()
    assert (res.records["status"] == "failed").all()  # not images: each failure is a record


def test_planning_loads_no_weights(tmp_path):
    """A checkpoint that does not fit its architecture is hashed when planned (its sha256 is in
    the key) but only fails when the job runs and the network is built."""
    from safetensors.torch import save_file
    import torch

    from robustart.zoo import ModelEntry, WeightSource, register, unregister
    from robustart.zoo.weights import file_sha256

    path = tmp_path / "wrong.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    register(ModelEntry(name="tmp-wrong", arch="resnet18", family="cnn", params=1, tags=("test",),
                        weights=WeightSource(file=str(path), sha256=file_sha256(path))))
    try:
        p = plan("tmp-wrong", None, limit=2, store=tmp_path / "s", progress=False)
        assert len(p.jobs) == 1 and p.jobs[0].weights == (str(path), file_sha256(path))
        assert not (tmp_path / "s" / "jobs").exists()  # nothing written either
        with pytest.raises(ValueError, match="does not fit"):
            execute(p.jobs[0], progress=False)
    finally:
        unregister("tmp-wrong")


def _run_shards(job, shards):
    from robustart.engine.execute import execute

    res = execute(job, shards, progress=False)
    return res.meta["status"]


def test_a_job_spec_runs_shard_by_shard_in_other_processes(tmp_path):
    """The unit of work of an executor: (job spec, shard index). Shards run in a spawned
    process and here give the records of a one-process run; the job is partial until all are in."""
    whole = plan("efficientnet_lite0", None, noise="pgd:eps=1/255,steps=2", store=tmp_path / "a", shard_size=2,
                 progress=False).jobs[0]
    ref = execute(whole, progress=False).records
    job = plan("efficientnet_lite0", None, noise="pgd:eps=1/255,steps=2", store=tmp_path / "b", shard_size=2,
               progress=False).jobs[0]
    assert job.key == whole.key and job.n == 4 and job.n_shards == 2 and job.shard_bounds(1) == (2, 4)
    job = pickle.loads(pickle.dumps(job))
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        assert pool.submit(_run_shards, job, [1]).result(timeout=600) == "partial"
    res = execute(job, [0], progress=False)
    assert res.meta["status"] == "complete" and res.meta["runs"][-1]["resumed_shards"] == 1
    cols = ["sample_id", "pred", "clean_pred", "correct", "success", "pert_linf"]
    assert res.records[cols].equals(ref[cols])
    assert res.meta["metrics"]["n"] == 4 and res.meta["metrics"]["top1"] == res.metrics["top1"]
    with pytest.raises(Exception, match="no shard 2"):
        execute(job, [2], force=True, progress=False)
