"""The engine in parts: plan (config -> job specs with keys and shard layouts, no weights loaded)
and execute (a job spec -> records, any subset of its shards, in any process). Job keys are the
ones the store has always used."""

import pickle
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest

from robustart.engine.execute import execute
from robustart.engine.plan import plan

# Keys computed by the engine before it was split into plan and execute (robustart 0.1.0): on
# the dataset of `keyset` below, limit 5. A key changes only with the store format.
PINNED = {
    ("efficientnet_lite0", "clean", 0): ["284b24c342b08a13"],
    ("efficientnet_lite0", "pgd", 0): ["527aa3bc2a39cd0e"],
    ("efficientnet_lite0", "pgd:eps=2/255,steps=5,norm=l2", 0): ["b1b8320cbdfb4986"],
    ("efficientnet_lite0", "fgsm:budget=small", 0): ["c205598938e408bd"],
    ("efficientnet_lite0", "cw", 0): ["d0592d5f991481ca"],
    ("efficientnet_lite0", "square:queries=100", 0): ["4d44b58e68141ef9"],
    ("efficientnet_lite0", "autoattack", 0): ["a2f0b90d3b8cb4c4"],
    ("efficientnet_lite0", "transfer:src=efficientnet_lite1", 0): ["d7f39ab37f747377"],
    ("efficientnet_lite0", "adversarial:budget=large", 0): [
        "2f74ee9c32a74ef1", "6bc3cac26fdbcae0", "e6340baa4da4a360", "19acd7e3394425d2", "a97a7eccd0e68962",
        "2f5435c5fca9f4d1"],
    ("efficientnet_lite0", "corruption:glass_blur:3", 0): ["9ab32f78c97fcafa"],
    ("efficientnet_lite0", "corruption:fog,impl=reference,jpeg=true", 0): [
        "1287cfecf464dd5e", "a4739bc20eaabf4e", "70a6a4caa6153446", "6243d6909c2909b8", "fefa22c17f2381f2"],
    ("efficientnet_lite0", "imagenet-s:decoder=opencv,resize=pil-bicubic", 0): ["37913913f6e8f57e"],
    ("efficientnet_lite0", "imagenet-s:decoder=turbo-fast,geometry=square", 0): ["8d13913ef0914520"],
    ("efficientnet_lite0", "precision:bf16", 0): ["296902b3e0e79187"],
    ("efficientnet_lite0", "precision:channels_last", 0): ["ed3fe898393e7f7b"],
    ("efficientnet_lite0", "precision:w8a8,calib=2,backends=fake+cpu-int8", 0): [
        "6ff90e4c47c3a57f", "2a007db6a9879aac"],
    ("efficientnet_lite0", "precision:w4a4,calib=3,observer=mse,backend=fake", 0): ["7b2f1d5b37bfe642"],
    ("efficientnet_lite0", "clean", 3): ["284b24c342b08a13"],
    ("efficientnet_lite0", "pgd", 3): ["9e9eb313cdf47982"],
    ("efficientnet_lite0", "pgd:eps=2/255,steps=5,norm=l2", 3): ["7656ab0f5448bc38"],
    ("efficientnet_lite0", "fgsm:budget=small", 3): ["d39c7472675cf415"],
    ("efficientnet_lite0", "cw", 3): ["078baa788385bf1c"],
    ("efficientnet_lite0", "square:queries=100", 3): ["a5ec62d5b3db4129"],
    ("efficientnet_lite0", "autoattack", 3): ["25bed2238ff6ed82"],
    ("efficientnet_lite0", "transfer:src=efficientnet_lite1", 3): ["e999ef588ffc2eea"],
    ("efficientnet_lite0", "corruption:glass_blur:3", 3): ["a9c036c70b1e10d2"],
    ("efficientnet_lite0", "corruption:fog,impl=reference,jpeg=true", 3): [
        "217c96c762f34837", "70b1ce62cb4a413c", "7e46834faf42c2ec", "9957f8cecb7cde48", "bf74e928951e999a"],
    ("efficientnet_lite0", "imagenet-s:decoder=opencv,resize=pil-bicubic", 3): ["a741c04b6213e5b6"],
    ("efficientnet_lite0", "imagenet-s:decoder=turbo-fast,geometry=square", 3): ["9140a2241fa95cb4"],
    ("efficientnet_lite0", "precision:bf16", 3): ["cfe3c7635bfe558a"],
    ("efficientnet_lite0", "precision:channels_last", 3): ["bd0d8bd93eee2a5d"],
    ("efficientnet_lite0@w8a8:calib=2", "clean", 0): ["c96677885e1db7ec"],
    ("efficientnet_lite0@w8a8:calib=2", "pgd", 0): ["2a9fd92ae678d1b9"],
    ("efficientnet_lite0@w8a8:calib=2", "clean", 3): ["c96677885e1db7ec"],
    ("efficientnet_lite0@w8a8:calib=2", "pgd", 3): ["81bb243e0abe50b9"],
    ("efficientnet_lite0@binary-bnn", "clean", 0): ["75c1499bf52836f2"],
    ("efficientnet_lite0@binary-bnn", "pgd", 0): ["e701fa0c0873955f"],
    ("efficientnet_lite0@binary-bnn", "clean", 3): ["75c1499bf52836f2"],
    ("efficientnet_lite0@binary-bnn", "pgd", 3): ["fe2b63e5bc831ad4"],
}


@pytest.fixture()
def keyset(tmp_path):
    """Six files in the flat ImageNet layout with fixed ids, labels and sizes: all a dataset
    fingerprint reads (they are not images, so every sample fails to decode when run)."""
    root = tmp_path / "keyset"
    root.mkdir()
    wnids = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331"]
    for i, w in enumerate(wnids):
        (root / f"{w}_{i}.JPEG").write_bytes(bytes([i]) * (1000 + 37 * i))
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
    assert res.key == "284b24c342b08a13" and (tmp_path / "jobs" / res.key / "meta.json").is_file()
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
