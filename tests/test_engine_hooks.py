"""The engine's noise hooks with a small real noise: `loader` (the noise's own image pipeline,
run in the decoding workers) and `predict` (how the model runs on the noisy batch)."""

import pytest
import torch

from robustart.engine.evaluate import evaluate
from robustart.noises import NOISE_FAMILIES
from robustart.noises.base import Noise, NoiseFamily, NoiseOutput


class GrayLoader:
    """Picklable: the eval transform of the grayscale image (a different image pipeline)."""

    def __init__(self, entry):
        from robustart.data.transforms import eval_transform

        self.transform = eval_transform(entry)

    def __call__(self, path):
        from PIL import Image

        if "n01443537" in str(path):  # one sample this pipeline cannot make
            raise ValueError("this pipeline refuses it")
        with Image.open(path) as im:
            return self.transform(im.convert("L").convert("RGB"))


class Gray(Noise):
    fields = []

    def loader(self, entry):
        return GrayLoader(entry)

    def apply(self, model, x, y, ids, clean_logits, seed, variant=None):
        assert variant is not None and variant.shape == x.shape
        return NoiseOutput(variant, {})


class Half(Noise):
    fields = []
    calls = 0

    def predict(self, model, x):
        Half.calls += 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x).float()

    def apply(self, model, x, y, ids, clean_logits, seed):
        return NoiseOutput(x, {})


class HooksFamily(NoiseFamily):
    def names(self):
        return {"gray": "", "half": ""}

    def parse(self, name, args, kwargs, spec):
        return {"name": name}

    def build(self, config):
        return Gray(config) if config["name"] == "gray" else Half(config)


@pytest.fixture()
def run(imagenet_sample, tmp_path):
    NOISE_FAMILIES.register("hooks", HooksFamily())  # a test-only family
    kw = {"limit": 6, "store": tmp_path, "progress": False, "workers": 2, "batch_size": 4}
    yield lambda noise: evaluate("efficientnet_lite0", str(imagenet_sample), noise=noise, **kw)
    NOISE_FAMILIES.unregister("hooks")


def test_loader_images_reach_the_model_and_failures_stay_per_sample(run):
    clean = run("clean").records
    gray = run("gray").records
    assert (gray["sample_id"] == clean["sample_id"]).all()
    refused = gray["sample_id"].str.contains("n01443537")
    assert refused.any() and (gray.loc[refused, "status"] == "failed").all()
    assert gray.loc[refused, "error"].str.contains("refuses it").all()
    ok = gray[~refused]
    assert (ok["status"] == "ok").all()
    assert (ok["clean_pred"] == clean.loc[~refused, "pred"]).all()  # the clean pass is the model's own
    # the model saw the grayscale images: every true-class probability moved
    assert (ok["prob"].to_numpy() != clean.loc[~refused, "prob"].to_numpy()).all()


def test_predict_runs_the_noisy_forward(run):
    clean = run("clean").records
    half = run("half").records
    assert Half.calls >= 2  # once per batch
    assert (half["clean_pred"] == clean["pred"]).all()
    assert not (half["prob"] == clean["prob"]).all()  # bf16 logits are not the fp32 ones
