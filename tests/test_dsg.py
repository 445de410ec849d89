"""Data-free calibration images (robustart.quant.dsg) and the three new low-bit forms through
`robustart eval`: calib_data=dsg|zeroq|noise, method=apq, bwta."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from robustart.cli import app
from robustart.quant import dsg
from robustart.zoo.build import ZooModel, build_network
from robustart.zoo.registry import ModelEntry, WeightSource


def tiny_cnn(name="tiny-bn", seed=0) -> ZooModel:
    e = ModelEntry(name=name, arch="small_resnet", family="nas", weights=WeightSource(), input_size=(1, 28, 28),
                   crop_pct=1.0, interpolation="bilinear", mean=(0.2860,), std=(0.3530,), num_classes=10,
                   arch_kwargs={"width": 4, "in_chans": 1})
    torch.manual_seed(seed)
    m = ZooModel(build_network(e), e).eval()
    # BN statistics of real structure (smooth blobs, not noise): reachable targets to match
    g = torch.Generator().manual_seed(seed)
    ref = torch.nn.functional.interpolate(torch.rand(64, 1, 7, 7, generator=g), size=28, mode="bilinear")
    bns = [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the pass
    m.train()
    with torch.no_grad():
        m(ref)
    for bn in bns:
        bn.momentum = 0.1
    return m.eval()


def test_generation_lowers_its_loss_and_dsg_differs_from_zeroq():
    m = tiny_cnn()
    bns = dsg._bn_layers(m.net)
    losses = {}
    for method in ("zeroq", "dsg"):
        cfg = dsg.GenConfig(method=method, n=4, iters=40, batch=4, lr=0.1)
        x0 = dsg.initial_images(4, m.entry.mean, m.entry.std, m.entry.input_size, 0)
        x = dsg.generate(m, cfg)
        assert x.shape == (4, 1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1
        st = dsg._Stats(bns)
        with torch.no_grad():
            m(x0)
            before = dsg.bn_loss([m.normalize(x0)] + st.out, bns, cfg)
            m(x)
            after = dsg.bn_loss([m.normalize(x)] + st.out, bns, cfg)
        st.close()
        assert after < 0.8 * before, (method, float(before), float(after))
        losses[method] = x
    assert not torch.equal(losses["dsg"], losses["zeroq"])
    noise = dsg.generate(m, dsg.GenConfig(method="noise", n=4))
    assert torch.equal(noise, dsg.initial_images(4, m.entry.mean, m.entry.std, m.entry.input_size, 0))


def test_slack_margin_and_layer_enhancement():
    """SDA: per-sample statistics within the margin cost nothing; LSE: sample i weighs layer i mod L more."""
    m = tiny_cnn()
    bns = dsg._bn_layers(m.net)[:1]
    bn = bns[0]
    mu, sd = bn.running_mean, torch.sqrt(bn.running_var + bn.eps)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, mu.numel(), 14, 14, generator=g)
    z = (z - z.mean((2, 3), keepdim=True)) / z.std((2, 3), keepdim=True, unbiased=False)
    feat = mu.view(1, -1, 1, 1) + sd.view(1, -1, 1, 1) * z  # exactly the BN's statistics, per sample
    img = torch.zeros(2, 1, 4, 4)
    img = (img + torch.tensor([[-1.0], [1.0]]).view(2, 1, 1, 1))  # mean 0, std 1 per channel over the batch
    cfg = dsg.GenConfig(method="dsg", n=2, lse=0.0)
    img_ps = torch.randn(2, 1, 4, 4, generator=g)
    img_ps = (img_ps - img_ps.mean((2, 3), keepdim=True)) / img_ps.std((2, 3), keepdim=True, unbiased=False)
    assert float(dsg.bn_loss([img_ps, feat], bns, cfg)) < 1e-6
    shifted = feat + 0.5 * sd.view(1, -1, 1, 1)  # half a std off: beyond the default margin (0.25 std)
    base = float(dsg.bn_loss([img_ps, shifted], bns, cfg))
    assert base > 0
    # only the part beyond the margin costs: (0.5 - 0.25)^2 std^2 per channel, the std term matches
    assert base == pytest.approx(float(((0.5 - dsg.MARGIN) * sd).pow(2).sum()), rel=1e-3)
    small = feat + 0.2 * sd.view(1, -1, 1, 1)  # inside the margin
    assert float(dsg.bn_loss([img_ps, small], bns, cfg)) < 1e-6
    # gen_margin: 0 matches each sample exactly, a wider margin lets the half-std shift through
    assert float(dsg.bn_loss([img_ps, small], bns, dsg.GenConfig(method="dsg", n=2, lse=0.0, margin=0.0))) > 1e-3
    assert float(dsg.bn_loss([img_ps, shifted], bns, dsg.GenConfig(method="dsg", n=2, lse=0.0, margin=0.6))) < 1e-6
    with pytest.raises(ValueError, match="margin"):
        dsg.GenConfig(method="dsg", margin=-0.1)
    # LSE: with offset 1, sample 0 (global index 1) enhances layer 1 (the BN layer)
    enhanced = float(dsg.bn_loss([img_ps, shifted], bns, dsg.GenConfig(method="dsg", n=2, lse=1.0), offset=1))
    assert enhanced == pytest.approx(base * 1.5, rel=1e-4)  # one of two samples counts twice


def test_images_are_cached_by_model_method_n_seed(_isolated_home):
    m = tiny_cnn()
    cfg = dsg.GenConfig(method="dsg", n=2, iters=3, batch=2)
    a, p = dsg.images_for(m, cfg)
    assert a.dtype == torch.uint8 and p.is_file() and p.parent == dsg.cache_dir()
    assert "tiny-bn-dsg-n2-s0-" in p.name
    mtime = p.stat().st_mtime_ns
    b, p2 = dsg.images_for(m, cfg)
    assert p2 == p and p.stat().st_mtime_ns == mtime and torch.equal(a, b)  # read back, not regenerated
    others = {dsg.cache_path(m.entry, None, c) for c in (
        dsg.GenConfig(method="dsg", n=2, iters=3, batch=2, seed=1), dsg.GenConfig(method="zeroq", n=2, iters=3, batch=2),
        dsg.GenConfig(method="dsg", n=3, iters=3, batch=2), dsg.GenConfig(method="dsg", n=2, iters=4, batch=2),
        dsg.GenConfig(method="dsg", n=2, iters=3, batch=2, margin=0.5))}
    assert p not in others and len(others) == 5
    # ZeroQ-style and noise images do not depend on DSG's settings: one cache file whatever the margin
    assert dsg.cache_path(m.entry, None, dsg.GenConfig(method="zeroq", n=2, margin=0.5)) \
        == dsg.cache_path(m.entry, None, dsg.GenConfig(method="zeroq", n=2))
    png = dsg.grid_png(a, _isolated_home / "grid.png")
    assert png.stat().st_size > 0


def _register(home, name, entry_kwargs, net):
    """A local zoo entry (as `robustart nas train` writes) for a small network with random weights."""
    from safetensors.torch import save_file

    from robustart.nas.train import entry_json
    from robustart.zoo import weights as W

    e = ModelEntry(name=name, weights=WeightSource(), input_size=(1, 28, 28), crop_pct=1.0,
                   interpolation="bilinear", mean=(0.2860,), std=(0.3530,), num_classes=10, **entry_kwargs)
    out = home / name
    out.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "model.safetensors"))
    d = entry_json(e, str((out / "model.safetensors").resolve()), W.file_sha256(out / "model.safetensors"),
                   sum(p.numel() for p in net.parameters()))
    (home / "zoo").mkdir(exist_ok=True)
    (home / "zoo" / f"{name}.json").write_text(json.dumps(d))


def test_robustart_eval_reaches_the_three_forms(fashion_mnist, _isolated_home, tmp_path):
    cnn = tiny_cnn()
    _register(_isolated_home, "tiny-bn", dict(arch="small_resnet", family="nas",
                                              arch_kwargs={"width": 4, "in_chans": 1}), cnn.net)
    vit_kw = dict(img_size=28, in_chans=1, patch_size=7, embed_dim=32, depth=2, num_heads=2)
    torch.manual_seed(0)
    vit = build_network(ModelEntry(name="x", arch="vit_tiny_patch16_224", family="transformer", weights=WeightSource(),
                                   num_classes=10, arch_kwargs=vit_kw))
    torch.nn.init.normal_(vit.head.weight, std=0.2)
    _register(_isolated_home, "tiny-vit", dict(arch="vit_tiny_patch16_224", family="transformer", arch_kwargs=vit_kw),
              vit)
    runner = CliRunner()
    store = str(tmp_path / "store")
    common = ["--data", "fashion-mnist:test", "--limit", "8", "--store", store, "--json"]
    keys = {}
    for model, form, check in (
        ("tiny-bn@w8a8:calib_data=dsg,calib=2,gen_iters=2", "w8a8", lambda c: c["calibration"]["generated"]["iters"] == 2
         and c["calibration"]["generated"]["margin"] == dsg.MARGIN),
        ("tiny-vit@w4a4:method=apq,calib=8", "w4a4", lambda c: c["quant"]["method"] == "apq"
         and c["quant"]["softmax"] == "mpq"),
        ("tiny-vit@bwta:calib=8,untrained=yes", "bwta", lambda c: c["quant"]["form"] == "bwta"
         and c["quant"]["untrained"] is True),
    ):
        r = runner.invoke(app, ["eval", "--model", model, *common])
        assert r.exit_code == 0, r.output
        res = json.loads(r.stdout)
        assert res["form"] == form
        from robustart.results.store import ResultsStore

        meta = ResultsStore(store).read_meta(res["key"])
        assert check(meta["config"]["model"]), meta["config"]["model"]
        keys[form] = res["key"]
    # the generation settings are in the job key: another gen_iters or gen_margin is another job
    r = runner.invoke(app, ["eval", "--model", "tiny-bn@w8a8:calib_data=dsg,calib=2,gen_iters=3", *common])
    assert r.exit_code == 0, r.output
    k3 = json.loads(r.stdout)["key"]
    assert k3 != keys["w8a8"]
    r = runner.invoke(app, ["eval", "--model", "tiny-bn@w8a8:calib_data=dsg,calib=2,gen_iters=3,gen_margin=0.5", *common])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["key"] not in (k3, keys["w8a8"])
    meta = ResultsStore(store).read_meta(json.loads(r.stdout)["key"])
    assert meta["config"]["model"]["calibration"]["generated"]["margin"] == 0.5
    r = runner.invoke(app, ["eval", "--model", "tiny-bn@w8a8:calib_data=dsg,gen_margin=wide", *common])
    assert r.exit_code == 2 and "gen_margin must be a number" in r.output
    # a generation setting where nothing is generated is refused, not carried into the key unused
    for model in ("tiny-bn@w8a8:calib_data=zeroq,calib=2,gen_margin=0.5", "tiny-bn@w8a8:calib=2,gen_iters=3"):
        r = runner.invoke(app, ["eval", "--model", model, *common])
        assert r.exit_code == 2 and "error:" in r.output and "drop them" in r.output, r.output
    r = runner.invoke(app, ["eval", "--model", "tiny-bn@bwta", *common])
    assert r.exit_code == 2 and "error:" in r.output and "transformer and mixer" in r.output
    r = runner.invoke(app, ["eval", "--model", "tiny-vit@bwta:calib=8", *common])  # untrained, not asked for
    assert r.exit_code == 2 and "--method bwta" in r.output and "--register" in r.output and "untrained=yes" in r.output
    r = runner.invoke(app, ["eval", "--model", "tiny-vit@w8a8:calib_data=dsg,calib=2", *common])
    assert r.exit_code == 2 and "BatchNorm" in r.output


def test_calib_gen_command(_isolated_home, tmp_path):
    cnn = tiny_cnn()
    _register(_isolated_home, "tiny-bn", dict(arch="small_resnet", family="nas",
                                              arch_kwargs={"width": 4, "in_chans": 1}), cnn.net)
    runner = CliRunner()
    png = tmp_path / "grid.png"
    r = runner.invoke(app, ["quant", "calib-gen", "tiny-bn", "--method", "zeroq", "--n", "3", "--iters", "2",
                            "--out", str(png), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert png.stat().st_size > 0 and res["settings"]["iters"] == 2 and res["n"] == 3
    # the same settings as the form tiny-bn@w8a8:calib_data=zeroq,calib=3,gen_iters=2 use: one cache file
    from robustart.quant.forms import calibration_set
    from robustart.zoo.registry import get_entry

    cal = calibration_set(get_entry("tiny-bn@w8a8:calib_data=zeroq,calib=3,gen_iters=2").quant)
    assert dsg.cache_path(get_entry("tiny-bn"), cnn.weights_sha256 or _sha(_isolated_home), cal.cfg).name \
        == res["cache"].rsplit("/", 1)[-1]
    r = runner.invoke(app, ["quant", "calib-gen", "tiny-bn", "--method", "dsgg"])
    assert r.exit_code == 2 and "error:" in r.output and "dsg" in r.output
    r = runner.invoke(app, ["quant", "calib-gen", "tiny-bn", "--method", "dsg", "--margin", "-1"])
    assert r.exit_code == 2 and "error:" in r.output and "margin" in r.output
    r = runner.invoke(app, ["quant", "calib-gen", "tiny-bn", "--method", "dsg", "--n", "2", "--iters", "2",
                            "--margin", "0.5", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["settings"]["margin"] == 0.5


def _sha(home):
    from robustart.zoo import weights as W

    return W.file_sha256(home / "tiny-bn" / "model.safetensors")
