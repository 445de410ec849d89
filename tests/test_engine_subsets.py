"""The engine on a class-subset dataset (ImageNet-A/R layout): the model answers among the
dataset's classes only, for clean and attacked images alike; labels stay ImageNet-1k indices."""

import shutil

import pytest

from robustart.engine.evaluate import evaluate


@pytest.fixture()
def tiny_imagenet_r(imagenet_sample, tmp_path):
    """An ImageNet-R-shaped folder (`<wnid>/<image>`) of five real sample images."""
    root = tmp_path / "classes"  # not named imagenet-r: the prefix says it, the plain path is an ImageFolder
    for p in sorted(imagenet_sample.glob("n*_*.JPEG"))[100:105]:
        d = root / p.name.split("_")[0]
        d.mkdir(parents=True)
        shutil.copy(p, d / p.name)
    return root


def test_predictions_stay_inside_the_class_subset(tiny_imagenet_r, tmp_path):
    from robustart.data.sources import open_source

    subset = set(open_source(f"imagenet-r:{tiny_imagenet_r}").class_subset)
    assert len(subset) == 5
    full = evaluate("efficientnet_lite0", f"imagenet-r:{tiny_imagenet_r}", store=tmp_path / "s", progress=False)
    rec = full.records
    assert set(rec["label"]) == subset
    assert all(set(t) <= subset for t in rec["top5"]) and set(rec["pred"]) <= subset
    assert full.meta["config"]["dataset"]["class_subset"] == sorted(subset)
    # Among 5 classes the model is at least as accurate as among 1000 on the same images.
    whole = evaluate("efficientnet_lite0", str(tiny_imagenet_r), store=tmp_path / "s", progress=False)
    assert whole.meta["config"]["dataset"].get("class_subset") is None
    assert rec["correct"].sum() >= whole.records["correct"].sum()
    adv = evaluate("efficientnet_lite0", f"imagenet-r:{tiny_imagenet_r}", noise="pgd:eps=1/255,steps=2",
                   store=tmp_path / "s", progress=False).records
    assert set(adv["pred"]) <= subset and set(adv["clean_pred"]) <= subset
    assert (adv["clean_pred"] == rec["pred"]).all()


def test_prerendered_imagenet_c_tree_gives_corruption_errors(imagenet_sample, tmp_path):
    """A clean run over ImageNet-C folders splits its records into corruption x severity cells."""
    from robustart.engine.evaluate import evaluate_suite

    files = sorted(imagenet_sample.glob("n*_*.JPEG"))[:6]
    for k, p in enumerate(files):
        d = tmp_path / "inc" / "fog" / ("1" if k < 3 else "3") / p.name.split("_")[0]
        d.mkdir(parents=True)
        shutil.copy(p, d / p.name)
    res = evaluate_suite("efficientnet_lite0", f"imagenet-c:{tmp_path / 'inc'}", store=tmp_path / "s", progress=False)
    rec = res.jobs[0].records
    for sev in ("1", "3"):
        cell = rec[rec["sample_id"].str.startswith(f"fog/{sev}/")]
        assert len(cell) == 3
        assert res.metrics["corruption_errors"]["fog"][sev] == pytest.approx(100 * (1 - cell["correct"].mean()), abs=1e-3)  # rounded to 4 places
    assert "corruption_note" in res.metrics and "mce" not in res.metrics  # 1 of 15 corruptions: no mCE
