"""Tests that follow the registries, as timm's test_models.py follows its model registry: every
registered noise (its quick examples: parse, build, a job on real images, its record columns),
every zoo family's entries, every quantization backend and binarization method. Decoders and
resizers: tests/test_imagenet_s.py runs every registered one. What is registered later is
tested here without a new test."""

import json

import pytest
import torch

from robustart.noises import NOISE_FAMILIES, build_noise, expand_noise, family_for, noise_label, section_of
from robustart.quant.backends import BACKENDS
from robustart.quant.binary import BINARIZATION_METHODS
from robustart.zoo import FAMILIES, list_entries

NOISES = [(fname, name) for fname, fam in NOISE_FAMILIES.items() for name in [*fam.names(), *fam.extends]]
ENTRIES = [(f, e) for f in FAMILIES.names() for e in list_entries(family=f)]


@pytest.fixture(scope="module")
def resources():
    from robustart.engine.execute import Resources

    return Resources(progress=False)


@pytest.mark.parametrize("fname, name", NOISES, ids=[f"{f}/{n}" for f, n in NOISES])
def test_every_noise_parses_builds_and_runs(fname, name, resources, tmp_path):
    from robustart.engine.execute import execute
    from robustart.engine.plan import plan
    from robustart.engine.records import record_schema

    fam = NOISE_FAMILIES.get(fname)
    examples = fam.examples(name)
    assert examples, f"noise family {fname!r} gives no example spec for {name!r} (NoiseFamily.examples)"
    assert fam.params(name) is not None and (name in fam.extends or fam.names()[name])
    for spec in examples:
        configs = expand_noise(spec)
        assert configs and all(family_for(c) is fam for c in configs), spec  # the family owns its configs
        for c in configs:
            assert json.loads(json.dumps(c)) == c  # JSON-able: it goes into the job key
            assert noise_label(c) and isinstance(section_of(c), str)
        noise = build_noise(configs[0])
        assert (noise is None) == (configs[0]["name"] == "clean")
        p = plan("efficientnet_lite0", None, noise=spec, limit=4, batch_size=4, workers=0, store=tmp_path,
                 progress=False)
        assert [j.noise for j in p.jobs] == [fam.resolve(c, p.source) for c in configs]
        res = execute(p.jobs[0], resources=resources, progress=False)
        rec = res.records
        schema = record_schema(build_noise(p.jobs[0].noise))
        assert list(rec.columns) == schema.names and len(rec) == 4
        assert set(rec["status"]) <= {"ok", "failed"} and (rec["status"] == "ok").any(), rec[["sample_id", "error"]]
        assert res.meta["status"] == "complete" and res.meta["metrics"]["n"] == 4


@pytest.mark.parametrize("family", FAMILIES.names())
def test_every_zoo_family_has_a_label_and_entries(family):
    from robustart.zoo.registry import family_label

    fam = FAMILIES.get(family)
    assert fam.name == family and fam.label and family_label(family) == fam.label
    assert list_entries(family=family), f"zoo family {family!r} has no entries"


@pytest.mark.parametrize("family, entry", ENTRIES, ids=[e.name for _, e in ENTRIES])
def test_every_entry_builds_with_its_declared_size(family, entry):
    """Each entry's network (its family's architectures registered first) has exactly the
    declared parameter count and maps its input size to its classes (meta device: no memory,
    no weights)."""
    from robustart.zoo.build import build_network

    assert entry.family == family and entry.params > 0
    assert len(entry.input_size) == 3 and len(entry.mean) == len(entry.std) == entry.input_size[0]
    assert 0 < entry.crop_pct <= 1 and entry.interpolation in ("bilinear", "bicubic", "nearest")
    with torch.device("meta"):
        net = build_network(entry).eval()
        out = net(torch.zeros(1, *entry.input_size))
    assert sum(p.numel() for p in net.parameters()) == entry.params
    assert tuple(out.shape) == (1, entry.num_classes)


def _quant_layer(backend: str):
    from robustart.quant import fake as Q

    torch.manual_seed(0)
    layer = Q.QuantLayer(torch.nn.Conv2d(4, 6, 3, padding=1), 8, 8, False)
    x = torch.randn(2, 4, 7, 7)
    Q.set_mode(layer, "calib")
    layer(x)
    layer.act.finish("minmax", 99.99)
    layer.set_weight_params("minmax", 99.99)
    Q.set_mode(layer, "quant")
    layer.observe_output = True
    with torch.no_grad():
        fake = layer(x)  # also records the output range backends with 8-bit outputs need
    layer.observe_output = False
    return layer, x, fake


@pytest.mark.parametrize("backend", BACKENDS.names())
def test_every_quant_backend_computes_the_quantized_layer(backend):
    """Where a backend runs here, a calibrated 8-bit conv on it gives the fake-quant output up to
    the rounding of its arithmetic (integer backends) or exactly (the simulation itself)."""
    from robustart.quant import backends as B

    b = B.get(backend)
    assert b.name == backend and b.help
    why = b.unavailable()
    if why is not None:
        assert isinstance(why, str) and why
        return
    layer, x, fake = _quant_layer(backend)
    B.set_backend(layer, backend)
    with torch.no_grad():
        y = layer(x)
    assert y.shape == fake.shape and torch.isfinite(y).all()
    if not b.integer:
        assert torch.equal(y, fake)
    else:
        assert (y - fake).abs().max() <= 0.05 * fake.abs().max()


@pytest.mark.parametrize("method", BINARIZATION_METHODS.names())
def test_every_binarization_method_binarizes_a_network(method):
    import copy

    import timm

    torch.manual_seed(0)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    m = BINARIZATION_METHODS.get(method)
    assert m.name == method
    b = m.binarize(copy.deepcopy(net)).eval()
    with torch.no_grad():
        y, ref = b(x), net(x)
    assert y.shape == ref.shape and torch.isfinite(y).all() and not torch.allclose(y, ref)
