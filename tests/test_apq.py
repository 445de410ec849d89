"""APQ-ViT (robustart.quant.apq) on small timm ViT / DeiT / Swin / Mixer networks: quantizers off is
the original model exactly, the MPQ softmax quantizer keeps ordering and row sums, and blockwise
calibration lowers the block output error against plain calibration."""

from __future__ import annotations

import copy

import pytest
import torch

from robustart.quant import apq
from robustart.quant import fake as Q
from robustart.quant.ptq import calibrate
from robustart.quant.qconfig import QuantConfig, parse_form
from robustart.zoo.build import ZooModel, build_network
from robustart.zoo.registry import ModelEntry, WeightSource

# small instances of the zoo's transformer / mixer architectures (timm classes, random weights)
ARCHS = {
    "vit": ("vit_tiny_patch16_224", "transformer",
            dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)),
    "deit": ("deit_tiny_patch16_224", "transformer",
             dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)),
    "swin": ("swin_tiny_patch4_window7_224", "transformer",
             dict(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2))),
    "mixer": ("small_mixer", "mixer", dict(img_size=32, in_chans=3, patch_size=8, num_blocks=2, embed_dim=32)),
}


def small_model(kind: str, seed: int = 0) -> ZooModel:
    arch, family, kw = ARCHS[kind]
    e = ModelEntry(name=f"test-{kind}", arch=arch, family=family, weights=WeightSource(), input_size=(3, 32, 32),
                   num_classes=10, arch_kwargs=kw)
    torch.manual_seed(seed)
    net = build_network(e)
    torch.nn.init.normal_(net.get_classifier().weight, std=0.2)  # timm zero-inits some heads
    return ZooModel(net, e).eval()


@pytest.fixture(autouse=True)
def _small_grid(monkeypatch):
    monkeypatch.setattr(apq, "GRID", torch.tensor([0.4, 0.6, 0.8, 1.0]))  # a coarse search keeps tests fast


def images(n=16, seed=1):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", list(ARCHS))
def test_quantizers_off_is_the_original_model(kind):
    m = small_model(kind)
    x = images(4)
    with torch.no_grad():
        ref = m(x)
    q = copy.deepcopy(m)
    cfg = parse_form("w4a4:method=apq")[1]["quant"]
    Q.quantize_modules(q.net, cfg)
    apq.use_mpq(q.net)
    if kind != "mixer":
        assert any(isinstance(mod, (apq.MPQAttention, apq.MPQWindowAttention)) for mod in q.modules())
    Q.set_mode(q, "fp")
    with torch.no_grad():
        assert torch.equal(q(x), ref)
    calibrate(q, images(8), cfg, batch_size=8)  # calibrated, then switched off again: still exact
    Q.set_mode(q, "fp")
    with torch.no_grad():
        assert torch.equal(q(x), ref)
        Q.set_mode(q, "quant")
        assert not torch.equal(q(x), ref)


def _rows(bits: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    p = (torch.randn(64, 50, generator=g) * 3).softmax(-1)  # power-law-like rows
    p[0] = 1 / 50  # a uniform row: a [0, 1] grid of 4 bits rounds it to all zeros
    q = apq.MPQuant(bits)
    q.mode = "calib"
    q(p)
    q.finish("minmax", 99.99)
    q.mode = "quant"
    return p, q


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_mpq_keeps_ordering_and_sums(bits):
    p, quant = _rows(bits)
    out = quant(p)
    c = quant.codes(p)
    assert torch.equal(c, c.round()) and c.min() >= 0 and c.max() <= 2 ** bits - 1
    assert (c.amax(-1) >= 1).all()  # no row vanishes
    torch.testing.assert_close(out, c / c.sum(-1, keepdim=True))
    torch.testing.assert_close(out.sum(-1), torch.ones(p.shape[0]), atol=1e-6, rtol=0)
    # monotone: p_i >= p_j implies q_i >= q_j (within each row)
    pi, pj = p[:, :, None], p[:, None, :]
    qi, qj = out[:, :, None], out[:, None, :]
    assert not ((pi >= pj) & (qi < qj)).any()
    # the top entry keeps its dominance: it is still (one of) the largest, and not smaller than before
    top = p.argmax(-1)
    assert torch.equal(out.gather(1, top[:, None]).squeeze(1), out.amax(-1))
    if bits == 8:
        assert (out - p).abs().max() < 0.05


def test_mpq_against_uniform_grid_on_a_flat_row():
    p, quant = _rows(4)
    uniform = Q.ActQuant(4, False, fixed_range=(0.0, 1.0))
    uniform.mode = "quant"
    assert uniform(p[:1]).sum() == 0  # today's grid zeroes the uniform row
    torch.testing.assert_close(quant(p[:1]), p[:1])  # MPQ keeps it exactly


def _calibrated(method: str, kind: str = "vit"):
    m = small_model(kind)
    cfg = QuantConfig(w_bits=4, a_bits=4, method=method)
    Q.quantize_modules(m.net, cfg)
    if cfg.softmax == "mpq":
        apq.use_mpq(m.net)
    calibrate(m, images(), cfg, batch_size=16)
    return m, cfg


@pytest.mark.parametrize("kind", ["vit", "mixer"])
def test_blockwise_calibration_lowers_block_error(kind):
    x = images()
    plain, _ = _calibrated("plain", kind)
    # the same model with APQ's blockwise calibration, softmax kept uniform: only BBC differs
    m = small_model(kind)
    cfg = QuantConfig(w_bits=4, a_bits=4, method="apq", softmax="uniform")
    Q.quantize_modules(m.net, cfg)
    calibrate(m, x, cfg, batch_size=16)
    bu = [u for u in apq.units(m) if not isinstance(u, Q.QuantLayer)]
    pu = [u for u in apq.units(plain) if not isinstance(u, Q.QuantLayer)]
    assert len(bu) == 2
    grads_a = apq.output_grads(m, bu, x)
    grads_p = apq.output_grads(plain, pu, x)
    ea = [apq.unit_error(m, u, x, grads_a) for u in bu]
    ep = [apq.unit_error(plain, u, x, grads_p) for u in pu]
    assert sum(e["bbc"] for e in ea) < sum(e["bbc"] for e in ep)
    assert sum(e["mse"] for e in ea) < sum(e["mse"] for e in ep)


def test_form_grammar_and_keys():
    cfg = parse_form("w4a4:method=apq")[1]["quant"]
    assert cfg.softmax == "mpq" and cfg.spec() == "w4a4:method=apq"
    assert "method" in cfg.to_dict() and cfg.to_dict()["softmax"] == "mpq"
    plain = parse_form("w4a4")[1]["quant"]
    assert not {"method", "softmax", "elim"} & set(plain.to_dict())  # existing forms keep their keys
    assert parse_form("w4a4:method=apq,softmax=uniform")[1]["quant"].spec() == "w4a4:method=apq,softmax=uniform"
    from robustart.quant.qconfig import FormError

    with pytest.raises(FormError, match="method must be one of"):
        parse_form("w4a4:method=apqq")
    with pytest.raises(FormError, match="elim"):
        parse_form("w4a4:method=apq,elim=1.5")
