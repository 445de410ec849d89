"""Extension points, used from outside the package: an attack, a noise family and a zoo family
defined here (a few lines and one registration each, no edit anywhere else) appear in the
listings, parse with "did you mean", run from the CLI and get their own report rows."""

import json

import pyarrow as pa
import pytest
import torch
from typer.testing import CliRunner

from robustart.cli import app
from robustart.noises import NOISE_FAMILIES, NoiseSpecError, parse_noise
from robustart.noises.adversarial import ATTACKS, Attack, register_attack
from robustart.noises.attacks import AttackOutput
from robustart.noises.base import Noise, NoiseFamily, NoiseOutput

runner = CliRunner()


def cli(*args):
    r = runner.invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return r


# --------------------------------------------------------------------------- an attack


class Shift(Attack):
    """Every pixel eps towards mid-grey: no gradients, inside the Linf ball by construction."""

    name = "shift"
    help = "moves every pixel eps towards mid-grey (an example attack)"
    optional = ("linf",)  # adversarial:attacks=shift adds it to a suite

    def run(self, noise, model, x, y, cfg, gens, seed):
        return AttackOutput((x + (0.5 - x).sign() * cfg["eps"]).clamp(0, 1))


@pytest.fixture()
def shift():
    register_attack(Shift)
    yield
    ATTACKS.unregister("shift")


def test_an_attack_is_one_class_and_one_decorator(shift, tmp_path):
    listed = json.loads(cli("noises", "--json").stdout)
    assert set(listed["shift"]["params"]) == {"eps", "budget", "norm", "amp", "channels_last"}
    assert parse_noise("shift:eps=8/255") == {"name": "shift", "norm": "linf", "eps": 8 / 255, "amp": "none",
                                             "channels_last": False}
    with pytest.raises(NoiseSpecError, match="Did you mean 'shift'"):
        parse_noise("shfit")
    d = json.loads(cli("eval", "--noise", "adversarial:attacks=shift+fgsm,budget=large", "--limit", "4",
                       "--store", str(tmp_path), "--json").stdout)
    assert [j["noise"] for j in d["jobs"]] == ["fgsm", "shift"]
    shift_job = d["jobs"][1]
    assert shift_job["noise_config"]["eps"] == 8 / 255 and shift_job["metrics"]["max_pert_linf"] <= 8 / 255 + 1e-6
    from robustart.reports import build_report

    rep = build_report(tmp_path, tmp_path / "report")
    adv = rep.tables["adversarial"]
    assert set(adv["attack"]) == {"fgsm", "shift"}
    assert adv.loc[adv["attack"] == "shift", "key"].item() == shift_job["key"]


# --------------------------------------------------------------------------- a noise family


class Invert(Noise):
    fields = [("mean_change", pa.float32())]

    def apply(self, model, x, y, ids, clean_logits, seed, variant=None):
        out = x + self.config["amount"] * (1 - 2 * x)
        return NoiseOutput(out, {"mean_change": (out - x).abs().flatten(1).mean(1).tolist()})


class InvertFamily(NoiseFamily):
    """`invert[:amount=A]`: each pixel moved A of the way to its negative."""

    def names(self):
        return {"invert": "photographic negative, partly (an example noise family)"}

    def params(self, name):
        return {"amount": "0..1, how far towards the negative (1)"}

    def parse(self, name, args, kwargs, spec):
        from robustart.noises.spec import take

        amount = take(dict(kwargs), spec, self.params(name)).get("amount", 1.0)
        return {"name": "invert", "amount": float(amount)}

    def build(self, config):
        return Invert(config)

    def label(self, config):
        return f"invert {config['amount']:g}"


@pytest.fixture()
def invert():
    NOISE_FAMILIES.register("invert", InvertFamily())
    yield
    NOISE_FAMILIES.unregister("invert")


def test_a_noise_family_is_one_class_and_one_registration(invert, tmp_path):
    listed = json.loads(cli("noises", "--json").stdout)
    assert listed["invert"]["params"] == {"amount": "0..1, how far towards the negative (1)"}
    with pytest.raises(NoiseSpecError, match="Did you mean 'invert'"):
        parse_noise("invrt")
    with pytest.raises(NoiseSpecError, match="did you mean 'amount'"):
        parse_noise("invert:amout=1")
    d = json.loads(cli("eval", "--noise", "invert:amount=0.5", "--limit", "2", "--store", str(tmp_path),
                       "--json").stdout)
    assert d["noise_config"] == {"name": "invert", "amount": 0.5} and d["n"] == 2
    r = cli("results", "list", "--store", str(tmp_path), "--json")
    assert [j["noise"] for j in json.loads(r.stdout)] == ["invert 0.5"]
    from robustart.engine.evaluate import JobResult
    from robustart.reports import build_report
    from robustart.results.store import ResultsStore

    st = ResultsStore(tmp_path)
    rec = JobResult(d["key"], st, st.read_meta(d["key"])).records
    assert (rec["mean_change"] > 0).all()  # the noise's own column
    other = build_report(tmp_path, tmp_path / "report").tables["other"]
    assert other["noise_label"].tolist() == ["invert 0.5"] and other["key"].tolist() == [d["key"]]


# --------------------------------------------------------------------------- a zoo family


class TinyNet(torch.nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 4, stride=4)
        self.fc = torch.nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


def register_tiny_architecture():
    """A family's own architectures, registered with timm as timm's own models are."""
    import timm
    from timm.models import register_model

    if not timm.is_model("toy_tinynet"):
        def toy_tinynet(pretrained=False, num_classes=1000, **kwargs):
            return TinyNet(num_classes)

        register_model(toy_tinynet)


@pytest.fixture()
def toy_family(tmp_path):
    from safetensors.torch import save_file

    from robustart.zoo import FAMILIES, ModelEntry, WeightSource, ZooFamily, register, unregister
    from robustart.zoo.weights import file_sha256

    FAMILIES.register("toy", ZooFamily("toy", "Toy", "tiny example models", architectures=register_tiny_architecture))
    torch.manual_seed(0)
    path = tmp_path / "toy-tiny.safetensors"
    save_file(TinyNet().state_dict(), str(path))
    register(ModelEntry(name="toy-tiny", arch="toy_tinynet", family="toy", input_size=(3, 32, 32), crop_pct=1.0,
                        interpolation="bilinear", params=sum(p.numel() for p in TinyNet().parameters()),
                        tags=("toy",), weights=WeightSource(file=str(path), sha256=file_sha256(path))))
    yield
    unregister("toy-tiny")
    FAMILIES.unregister("toy")


def test_a_zoo_family_is_one_object_and_one_registration(toy_family, tmp_path):
    listed = json.loads(cli("zoo", "list", "--family", "toy", "--json").stdout)
    assert [e["name"] for e in listed] == ["toy-tiny"]
    r = runner.invoke(app, ["zoo", "list", "--family", "tyo"])
    assert r.exit_code == 2 and "Did you mean 'toy'" in r.output
    r = runner.invoke(app, ["eval", "--model", "toy-tinny", "--store", str(tmp_path)])
    assert r.exit_code == 2 and "Did you mean 'toy-tiny'" in r.output
    d = json.loads(cli("eval", "--model", "toy-tiny", "--limit", "2", "--store", str(tmp_path), "--json").stdout)
    assert d["model"] == "toy-tiny" and d["n"] == 2 and d["n_failed"] == 0
    from robustart.reports import build_report

    clean = build_report(tmp_path, tmp_path / "report").tables["clean"]
    assert clean["family"].tolist() == ["Toy"] and clean["model"].tolist() == ["toy-tiny"]
