"""Pre-rendered robustness datasets (ImageNet-C, -A, -R, -Sketch, V2) as data sources, built from
links to real ImageNet images in their published layouts; and the imagenet-c suite end to end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from robustart.data.sources import _wnid_index, open_source
from robustart.errors import DataError


def _files(sample: Path, n: int, step: int = 97) -> list[Path]:
    return sorted(sample.glob("n*_*.JPEG"))[::step][:n]


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


@pytest.fixture
def imagenet_c_tree(tmp_path, imagenet_sample):
    root = tmp_path / "ImageNet-C"
    files = _files(imagenet_sample, 3)
    for c in ("fog", "glass_blur"):
        for s in ("1", "3"):
            for f in files:
                _link(f, root / c / s / f.name.split("_")[0] / f.name)
    (root / "README.txt").write_text("not data")
    return root, files


def test_imagenet_c_whole_tree_and_slices(imagenet_c_tree):
    root, files = imagenet_c_tree
    index = _wnid_index()
    src = open_source(root)
    assert src.kind == "imagenet-c" and len(src.samples) == 12
    ids = [s.id for s in src.samples]
    assert ids == sorted(ids)
    s0 = src.samples[0]
    c, sev, wnid, name = s0.id.split("/")
    assert (c, sev) == ("fog", "1") and s0.label == index[wnid] and name.startswith(wnid)
    # one corruption folder, one severity folder: same ids as in the whole tree
    one = open_source(root / "glass_blur")
    assert {s.id for s in one.samples} == {i for i in ids if i.startswith("glass_blur/")}
    cell = open_source(root / "glass_blur" / "3")
    assert {s.id for s in cell.samples} == {i for i in ids if i.startswith("glass_blur/3/")}
    assert all(s.label == index[s.id.split("/")[2]] for s in cell.samples)


def test_imagenet_c_prefix_and_errors(imagenet_c_tree, tmp_path):
    root, _ = imagenet_c_tree
    assert open_source(f"imagenet-c:{root}").kind == "imagenet-c"
    (tmp_path / "other" / "x").mkdir(parents=True)
    with pytest.raises(DataError, match="corruption>/<severity>"):
        open_source(f"imagenet-c:{tmp_path / 'other'}")
    with pytest.raises(DataError, match="prefix"):
        open_source(f"imagenet-q:{root}")


@pytest.mark.parametrize("kind", ["imagenet-a", "imagenet-r"])
def test_imagenet_a_r_keep_1k_labels_and_carry_the_class_subset(tmp_path, imagenet_sample, kind):
    index = _wnid_index()
    files = _files(imagenet_sample, 5)
    root = tmp_path / kind
    for f in files:
        _link(f, root / f.name.split("_")[0] / f.name)
    src = open_source(root)
    assert src.kind == kind
    wnids = sorted(f.name.split("_")[0] for f in files)
    assert src.class_subset == tuple(sorted(index[w] for w in wnids))
    assert [s.label for s in src.samples] == [index[s.id.split("/")[0]] for s in src.samples]
    # another folder name: the prefix says what it is; without it, a plain ImageFolder (no subset)
    other = tmp_path / "renamed"
    os.rename(root, other)
    assert open_source(f"{kind}:{other}").class_subset == src.class_subset
    assert open_source(other).class_subset is None


def test_imagenet_sketch_and_v2(tmp_path, imagenet_sample):
    index = _wnid_index()
    files = _files(imagenet_sample, 4)
    sk = tmp_path / "sketch"
    v2 = tmp_path / "imagenetv2-matched-frequency-format-val"
    for f in files:
        w = f.name.split("_")[0]
        _link(f, sk / w / f.name)
        _link(f, v2 / str(index[w]) / f.name)
    s = open_source(sk)
    assert s.kind == "imagenet-sketch" and s.class_subset is None
    assert all(x.label == index[x.id.split("/")[0]] for x in s.samples)
    v = open_source(v2)
    assert v.kind == "imagenetv2"
    # labels are the folder numbers, not their sorted position (sorted as text, "10" < "2")
    assert sorted(x.label for x in v.samples) == sorted(index[f.name.split("_")[0]] for f in files)
    assert all(x.label == int(x.id.split("/")[0]) for x in v.samples)
    (v2 / "n01440764").mkdir()
    with pytest.raises(DataError, match="class index"):
        open_source(f"imagenetv2:{v2}")


@pytest.mark.slow
def test_imagenet_c_suite_end_to_end_writes_mce(imagenet_sample, tmp_path):
    """`imagenet-c` through the engine on two real images: 75 jobs and an mCE from their records."""
    import robustart
    from robustart.noises.corruptions.constants import ALEXNET_ERROR, COMMON

    files = _files(imagenet_sample, 2, step=500)
    flat = tmp_path / "two"
    for f in files:
        _link(f, flat / f.name)
    res = robustart.evaluate_suite("efficientnet_lite0", str(flat), noise="imagenet-c", progress=False,
                                   store=tmp_path / "store", batch_size=2)
    assert len(res.jobs) == 75
    m = res.metrics
    # every CE lies between 0 (no error) and 100 / AlexNet's error (all wrong)
    assert m["mce"] is not None and 0 <= m["mce"] <= 100 / min(ALEXNET_ERROR.values())
    assert set(m["ce"]) == set(COMMON)
    # the table's cells are the jobs' own error rates
    for job in res.jobs[:5]:
        cfg = job.meta["config"]["noise"]
        err = 100 * (1 - job.records["correct"].mean())
        assert abs(m["corruption_errors"][cfg["corruption"]][str(cfg["severity"])] - err) < 1e-6
