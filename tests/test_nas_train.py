"""Fashion-MNIST / CIFAR-10 sources, adversarial training, local zoo entries through the engine."""

import gzip
import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from robustart.data.sources import open_source
from robustart.errors import DataError


def test_fashion_mnist_source_reads_the_idx_files(fashion_mnist):
    src = open_source("fashion-mnist:test")
    assert src.name == "fashion-mnist:test" and src.num_classes == 10 and len(src.samples) == 10_000
    assert [s.id for s in src.samples[:2]] == ["test/00000", "test/00001"]
    # the first test images are an ankle boot (9), a pullover (2), trousers (1)
    assert [s.label for s in src.samples[:3]] == [9, 2, 1]
    x = src.read(src.samples[0])
    assert x.dtype == torch.uint8 and x.shape == (1, 28, 28) and 0 < x.float().mean() < 255
    with gzip.open(fashion_mnist / "t10k-images-idx3-ubyte.gz") as f:
        raw = f.read()
    assert bytes(x.flatten().tolist()) == raw[16:16 + 784]  # pixels straight from the file
    train = open_source(f"fashion-mnist:train:{fashion_mnist}")
    assert len(train.samples) == 60_000 and train.samples[0].id == "train/00000"


def test_fashion_mnist_torchvision_layout_and_bad_files(fashion_mnist, tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # torchvision keeps them unzipped too
        with gzip.open(fashion_mnist / f"{stem}.gz") as f, open(raw / stem, "wb") as g:
            shutil.copyfileobj(f, g)
    a, b = open_source(f"fashion-mnist:test:{tmp_path}"), open_source("fashion-mnist:test")
    assert [s.label for s in a.samples] == [s.label for s in b.samples]
    assert torch.equal(a.read(a.samples[123]), b.read(b.samples[123]))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05ab")
    with pytest.raises(DataError, match="truncated idx"):
        open_source(f"fashion-mnist:test:{tmp_path}")
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        open_source(f"fashion-mnist:test:{tmp_path / 'nowhere'}")


def _write_cifar(root, n_per_batch=4):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n_per_batch).tolist()
        with open(d / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n_per_batch}, f)
        batches[name] = (data, labels)
    return d, batches


def test_cifar10_source_reads_the_torchvision_batches(tmp_path):
    d, batches = _write_cifar(tmp_path)
    test = open_source(f"cifar10:{tmp_path}:test")
    assert test.name == "cifar10:test" and len(test.samples) == 4
    data, labels = batches["test_batch"]
    assert [s.label for s in test.samples] == labels
    x = test.read(test.samples[2])
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(x, torch.from_numpy(data[2].reshape(3, 32, 32)))  # CIFAR's R, G, B planes
    train = open_source(f"cifar10:{d}:train")
    assert len(train.samples) == 20 and [s.label for s in train.samples[4:8]] == batches["data_batch_2"][1]


def test_cifar10_batches_that_would_run_code_are_refused(tmp_path):
    import os

    d, _ = _write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DataError, match="refusing to load"):
        open_source(f"cifar10:{d}:test")
    assert not (tmp_path / "pwned").exists()


def test_array_transform_brings_images_to_the_entry_geometry():
    from robustart.data.transforms import array_transform
    from robustart.zoo.registry import get_entry

    gray = torch.arange(28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8).view(1, 28, 28)
    to_cifar = array_transform(get_entry("abanditnas-10"))(gray)
    assert to_cifar.shape == (3, 32, 32) and torch.equal(to_cifar[0], to_cifar[2])
    rgb = torch.stack([torch.full((28, 28), 255), torch.zeros(28, 28), torch.zeros(28, 28)]).to(torch.uint8)
    g = array_transform(get_entry("abanditnas-mnist"))(rgb)
    assert g.shape == (1, 28, 28) and int(g[0, 0, 0]) == round(0.299 * 255)  # luma of pure red
    same = array_transform(get_entry("abanditnas-mnist"))(gray)
    assert torch.equal(same, gray)  # nothing to do: untouched


@pytest.mark.parametrize("attack", ["pgd", "fgsm-rs"])
def test_adversarial_training_steps_lower_the_adversarial_loss(fashion_mnist, attack):
    import torch.nn.functional as F

    from robustart.nas.train import adversarial_batch, load_split, loss_of, model_entry, pgd_linf
    from robustart.zoo.build import ZooModel, build_network

    x_u8, y, kind = load_split("fashion-mnist", "train", 128)
    x = x_u8.float() / 255
    entry = model_entry("t", "small_resnet", kind, (1, 28, 28), width=8)
    torch.manual_seed(0)
    model = ZooModel(build_network(entry), entry)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def adv_loss():
        # the training objective itself: PGD-5 loss on a fixed batch, BN on batch statistics
        model.train()
        xa = pgd_linf(model, x, y, 0.1, 0.04, 5, torch.Generator().manual_seed(1))
        with torch.no_grad():
            return F.cross_entropy(model(xa), y).item()

    before = adv_loss()
    g = torch.Generator().manual_seed(0)
    for step in range(15):
        model.train()
        idx = torch.randperm(128, generator=g)[:32]
        xa = adversarial_batch(model, x[idx], y[idx], attack, 0.1, 3, None, g)
        assert (xa - x[idx]).abs().max() <= 0.1 + 1e-6 and xa.min() >= 0 and xa.max() <= 1
        loss, _ = loss_of(model, xa, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = adv_loss()
    assert after < before - 0.2, (before, after)


@pytest.mark.slow
def test_trained_local_entry_round_trips_through_robustart_eval(fashion_mnist, tmp_path, _isolated_home):
    from robustart.cli import app
    from robustart.nas.train import TrainConfig, train
    from robustart.zoo.registry import get_entry

    out = tmp_path / "tiny-at"
    runner = CliRunner()
    r = runner.invoke(app, ["nas", "train", "--arch", "small_resnet", "--width", "4", "--data", "fashion-mnist",
                            "--epochs", "1", "--train-limit", "128", "--batch-size", "64", "--attack", "fgsm-rs",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["name"] == "tiny-at" and (out / "model.safetensors").is_file()
    entry = get_entry("tiny-at")  # registered in $ROBUSTART_HOME/zoo
    assert entry.weights.kind == "file" and entry.weights.sha256 == res["sha256"]
    assert entry.input_size == (1, 28, 28) and entry.num_classes == 10 and "adversarial-training" in entry.tags
    assert len(json.loads((out / "train_log.jsonl").read_text().splitlines()[0])) >= 3

    args = ["eval", "--model", "tiny-at", "--data", "fashion-mnist:test", "--limit", "48",
            "--noise", "pgd:eps=0.1,steps=5", "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    job = json.loads(r.stdout)
    assert job["n"] == 48 and job["n_failed"] == 0 and job["dataset"] == "fashion-mnist:test"
    assert 0 <= job["metrics"]["top1"] <= job["metrics"]["clean_top1"] <= 100
    assert job["metrics"]["max_pert_linf"] <= 0.1 + 1e-6
    # the entry file itself works as a model name, and reuses the stored job
    r = runner.invoke(app, [*args[:2], str(out / "entry.json"), *args[3:]])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["metrics"]["top1"] == job["metrics"]["top1"]
    # noises that cannot apply say why: ImageNet-S decodes files, corruptions need RGB
    for noise, why in [("imagenet-s", "decodes image files"), ("corruption:gaussian_noise", "need RGB")]:
        r = runner.invoke(app, ["eval", "--model", "tiny-at", "--data", "fashion-mnist:test", "--limit", "4",
                                "--noise", noise])
        assert r.exit_code == 2 and why in r.output, r.output
    # its quantized form calibrates on the in-memory grayscale images (no file decoding)
    r = runner.invoke(app, ["eval", "--model", "tiny-at@w8a8:calib=8", "--data", "fashion-mnist:test", "--limit", "16",
                            "--json"])
    assert r.exit_code == 0, r.output
    qjob = json.loads(r.stdout)
    assert qjob["form"] == "w8a8" and qjob["n"] == 16 and qjob["n_failed"] == 0
    # a changed checkpoint is refused by its sha256
    (out / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes()[:-4] + b"\x00\x00\x00\x01")
    r = runner.invoke(app, args)
    assert r.exit_code != 0 and "sha256" in r.output
    # resuming a finished run trains nothing more; another configuration is refused
    cfg = TrainConfig(data="fashion-mnist", out=str(out), arch="small_resnet", width=4, epochs=2, train_limit=128)
    with pytest.raises(Exception, match="another configuration"):
        train(cfg, register=False, progress=False)


def test_broken_local_entries_are_named_not_fatal(_isolated_home):
    from robustart.errors import RobustartError
    from robustart.zoo.registry import get_entry, list_entries

    zoo = _isolated_home / "zoo"
    zoo.mkdir()
    (zoo / "broken.json").write_text('{"name": "broken", "arch": "small_resnet"}')
    with pytest.raises(RobustartError, match="broken.json: not a local model entry"):
        get_entry("broken")
    assert "broken" not in {e.name for e in list_entries()}  # the rest of the zoo still lists
