"""Post-training quantization: observers, the fake-quant grid, real efficientnet_lite0 forms on
real images, block reconstruction, integer backends, ViT / Mixer attention and linear layers,
zoo form names, job keys, and the CLI (`@w8a8 --noise pgd`, `--noise precision:w8a8`)."""

import copy
import json

import pytest
import torch
from torch import nn

from robustart.errors import RobustartError
from robustart.quant import backends as B
from robustart.quant import fake as Q
from robustart.quant import observers as O
from robustart.quant.qconfig import FormError, QuantConfig, parse_form

torch.set_num_threads(min(2, torch.get_num_threads()))


# --------------------------------------------------------------------------- observers


def test_minmax_percentile_mse_on_known_tensors():
    s, z = O.params_from_range(torch.tensor(-1.0), torch.tensor(3.0), 8, False)
    assert s.item() == pytest.approx(4 / 255) and z.item() == 64  # -1 / (4/255) = -63.75 -> 64
    s, z = O.params_from_range(torch.tensor(-1.0), torch.tensor(3.0), 8, True)
    assert s.item() == pytest.approx(3 / 127) and z.item() == 0

    x = torch.linspace(0, 1, 100_001)
    x[-1] = 100.0  # one outlier
    st = O.RangeStats()
    st.update(x)
    s_mm, _ = st.params(8, False, "minmax")
    s_pc, _ = st.params(8, False, "percentile", 99.9)
    assert s_mm.item() == pytest.approx(100 / 255)
    assert s_pc.item() == pytest.approx(1 / 255, rel=0.01)  # the outlier is clipped away
    s_mse, z_mse = st.params(4, False, "mse")
    assert s_mse.item() < 0.1 * st.params(4, False, "minmax")[0].item()  # MSE clips the range ...
    err = lambda s, z: (O.fake(st.sample, s, z, 0, 15) - st.sample).pow(2).mean()  # noqa: E731
    assert err(s_mse, z_mse) < err(*st.params(4, False, "minmax"))  # ... and lowers the error

    w = torch.tensor([[0.5, -1.0, 0.25], [2.0, 1.0, -0.5]])
    s, z = O.weight_params(w, 8)
    assert torch.allclose(s, torch.tensor([1.0, 2.0]) / 127) and (z == 0).all()
    s4, _ = O.weight_params(w, 4)
    assert torch.allclose(s4, torch.tensor([1.0, 2.0]) / 7)


@pytest.mark.parametrize("act", ["asym", "sym"])
@pytest.mark.parametrize("bits", [8, 4])
def test_fake_quant_values_lie_on_the_integer_grid(act, bits):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1)
    layer = Q.QuantLayer(conv, bits, bits, act == "sym")
    x = torch.randn(4, 3, 8, 8).relu() + (0 if act == "asym" else -0.2)
    Q.set_mode(layer, "calib")
    layer(x)
    layer.act.finish("minmax", 99.99)
    layer.set_weight_params("minmax", 99.99)
    Q.set_mode(layer, "quant")
    # weights: per output channel, symmetric, narrow range
    wq = layer.fake_weight() / layer.w_scale.view(-1, 1, 1, 1)
    m = 2 ** (bits - 1) - 1
    assert torch.allclose(wq, wq.round(), atol=1e-4) and wq.abs().max() <= m
    assert torch.allclose(layer.w_scale, conv.weight.detach().abs().flatten(1).amax(1) / m)
    # activations: per tensor; asymmetric codes in [0, 2^b - 1] with an integer zero point
    a = layer.act(x)
    codes = a / layer.act.scale + layer.act.zero_point
    assert torch.allclose(codes, codes.round(), atol=1e-3)
    lo, hi = (0, 2 ** bits - 1) if act == "asym" else (-m, m)
    assert codes.min() >= lo - 1e-3 and codes.max() <= hi + 1e-3
    if act == "sym":
        assert layer.act.zero_point.item() == 0
    else:
        assert layer.act.scale.item() == pytest.approx(float(x.max() - min(0.0, float(x.min()))) / (2 ** bits - 1), rel=1e-5)
    assert len(torch.unique(codes.round())) <= 2 ** bits
    # straight-through: gradients reach the input
    xg = x.clone().requires_grad_(True)
    layer(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


# --------------------------------------------------------------------------- efficientnet_lite0 on real images


def _lite0_form(spec, calib_source):
    from robustart.quant.forms import calibration_set, quantize_zoo_model
    from robustart.zoo.build import load_model
    from robustart.zoo.registry import get_entry

    e = get_entry(spec)
    m = load_model("efficientnet_lite0", progress=False)
    m.entry = e
    return quantize_zoo_model(m, e.quant, calibration_set(e.quant, calib_source), use_cache=False)


@pytest.fixture(scope="module")
def lite0(imagenet_sample):
    """fp lite0, its images (8 evaluated + calibration from the sample) and quantized forms."""
    from robustart.data.sources import open_source
    from robustart.quant.forms import CalibSet
    from robustart.zoo.build import load_model

    src = open_source(imagenet_sample)
    fp = load_model("efficientnet_lite0", progress=False)
    evald = CalibSet("x", "", src.samples[100:108], "", False)
    x = evald.load(fp.entry)
    with torch.no_grad():
        ref = fp(x)
    forms = {f: _lite0_form(f"efficientnet_lite0@{f}:calib=8", src) for f in ("w8a8", "w6a6", "w4a8", "w4a4")}
    return {"fp": fp, "x": x, "ref": ref, "forms": forms, "src": src}


def test_lite0_w8a8_agrees_with_fp_and_error_grows_as_bits_shrink(lite0):
    x, ref = lite0["x"], lite0["ref"]
    errs = {}
    with torch.no_grad():
        for f, m in lite0["forms"].items():
            out = m(x)
            errs[f] = (out - ref).abs().mean().item()
            if f == "w8a8":
                assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 7 / 8
                assert (out - ref).abs().max() < 0.25 * ref.abs().max()
    assert errs["w8a8"] < errs["w6a6"] < errs["w4a4"], errs


def test_cpu_int8_matches_its_integer_reference_and_is_close_to_fake(lite0):
    m = copy.deepcopy(lite0["forms"]["w8a8"])
    x = lite0["x"][:2]
    layers = Q.quant_layers(m)
    seen = {}
    hooks = [layer.register_forward_hook(lambda mod, a, o: seen.__setitem__(id(mod), a[0])) for layer in layers]
    with torch.no_grad():
        fake_logits = m(x)
    for h in hooks:
        h.remove()
    B.set_backend(m, "cpu-int8")
    for layer in layers[:4] + layers[-2:]:
        xi = seen[id(layer)]
        with torch.no_grad():
            y, r = B._cpu_int8(layer, xi), B.reference(layer, xi, requantize=True)
        steps = ((y - r).abs() / B.out_params(layer)[0]).round()
        # fbgemm's requantization multiplier is float32: a rare tie rounds the other way
        assert steps.max() <= 1 and (steps > 0).float().mean() < 1e-3
    with torch.no_grad():
        int_logits = m(x)
    d = (int_logits - fake_logits).abs()
    assert 0 < d.max() < 0.2 * fake_logits.abs().max()  # integer kernels requantize: close, not equal
    assert (int_logits.argmax(1) == fake_logits.argmax(1)).all()


def test_reconstruction_lowers_block_output_error(lite0):
    from robustart.quant.reconstruct import block_error, reconstruct_unit, units

    m = copy.deepcopy(lite0["forms"]["w4a8"])  # 4-bit weights: rounding is what hurts
    imgs = lite0["x"]
    us = units(m)
    assert len(us) == 16 + 3  # 16 blocks + stem conv, head conv, classifier
    unit = us[12]  # a 14x14 block: cheap
    before = block_error(m, unit, imgs)
    w_before = [layer.w_int.clone() for layer in Q.quant_layers(unit)]
    reconstruct_unit(m, unit, imgs, iters=40)
    after = block_error(m, unit, imgs)
    assert after < 0.8 * before, (before, after)
    changed = sum(int((layer.w_int != w).sum()) for layer, w in zip(Q.quant_layers(unit), w_before))
    assert changed > 0
    for layer, w in zip(Q.quant_layers(unit), w_before):  # AdaRound only moves a code by one step
        assert (layer.w_int.int() - w.int()).abs().max() <= 1


# --------------------------------------------------------------------------- transformers and mixers


def _calibrated(net, cfg, x):
    from robustart.quant.ptq import calibrate

    Q.quantize_modules(net, cfg)
    return calibrate(net, x, cfg)


def _small(arch):
    from timm.models.mlp_mixer import MlpMixer
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer

    if arch == "vit":
        net = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10)
    elif arch == "swin":  # 8x8 tokens, 4x4 windows: the first stage's second block uses shifted windows
        net = SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=32, depths=(2, 2),
                              num_heads=(2, 4), num_classes=10)
    else:
        net = MlpMixer(num_classes=10, img_size=32, patch_size=8, num_blocks=2, embed_dim=64)
    head = net.get_classifier()
    nn.init.normal_(head.weight, std=0.1)  # timm zero-initialises some heads: logits must vary
    return net


@pytest.mark.parametrize("arch", ["vit", "swin", "mixer"])
def test_vit_and_mixer_quantize_with_attention_matmuls(arch):
    torch.manual_seed(0)
    fp = _small(arch).eval()
    x = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        ref = fp(x)
    errs = {}
    for bits in (8, 4):
        net = _calibrated(copy.deepcopy(fp), QuantConfig(w_bits=bits, a_bits=bits, first_last=0), x)
        attn = [m for m in net.modules() if isinstance(m, Q.QuantAttention)]
        assert bool(attn) == (arch != "mixer")
        if bits == 8:  # with quantizers off, the wrapped attention (masks, position bias) is the original
            Q.set_mode(net, "fp")
            with torch.no_grad():
                assert torch.allclose(net(x), ref, rtol=1e-4, atol=1e-5)
            Q.set_mode(net, "quant")
        assert all(not isinstance(m, nn.Linear) or isinstance(p, Q.QuantLayer)
                   for p in net.modules() for m in p.children())
        with torch.no_grad():
            out = net(x)
        errs[bits] = (out - ref).abs().mean().item() / ref.abs().mean().item()
        if bits == 8:
            assert errs[8] < 0.1
            B.set_backend(net, "cpu-int8")
            with torch.no_grad():
                out_int = net(x)
            assert 0 < (out_int - out).abs().max() < 0.1 * out.abs().max()
    assert errs[8] < errs[4]


def test_attention_integer_matmul_equals_fake_quant_matmul():
    torch.manual_seed(0)
    net = _small("vit").eval()
    net = _calibrated(net, QuantConfig(), torch.rand(4, 3, 32, 32))
    qa = next(m for m in net.modules() if isinstance(m, Q.QuantAttention))
    a, b = torch.randn(2, 3, 17, 64) * 0.5, torch.randn(2, 3, 64, 17) * 0.5
    with torch.no_grad():
        fake = qa._matmul(qa.q_act, a, qa.k_act, b)
        qa.backend = "cpu-int8"
        exact = qa._matmul(qa.q_act, a, qa.k_act, b)
    assert torch.allclose(fake, exact, rtol=1e-5, atol=1e-5)  # same grid values, exact sums


# --------------------------------------------------------------------------- triton backend


def test_triton_backend_matches_the_integer_reference():
    pytest.importorskip("triton")
    try:
        from robustart import kernels  # noqa: F401
    except ImportError:
        pytest.skip("robustart.kernels is not part of this tree")
    # backend "triton" runs the kernels themselves (Triton's interpreter on a CPU-only machine)
    torch.manual_seed(0)
    from timm.layers import Conv2dSame

    cases = [(8, False, nn.Conv2d(4, 6, 3, padding=1)), (4, False, nn.Conv2d(4, 6, 3, padding=1)),
             (8, True, Conv2dSame(4, 4, 3, stride=2, groups=4)), (8, False, nn.Linear(16, 5)),
             (4, True, nn.Linear(16, 5))]
    for bits, sym, mod in cases:
        x = torch.randn(2, 4, 7, 7) if isinstance(mod, nn.Conv2d) else torch.randn(3, 16)
        layer = Q.QuantLayer(mod, bits, 8, sym)
        Q.set_mode(layer, "calib")
        layer(x)
        layer.act.finish("minmax", 99.99)
        layer.set_weight_params("minmax", 99.99)
        Q.set_mode(layer, "quant")
        layer.backend = "triton"
        with torch.no_grad():
            y = B.int_forward(layer, x)
            r = B.reference(layer, x, requantize=False)
        assert torch.allclose(y, r, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- forms, keys, CLI


def test_form_names_parse_and_errors_say_what_would():
    from robustart.zoo.registry import FORMS, UnknownModelError, get_entry

    e = get_entry("efficientnet_lite0@w4a4:observer=mse,recon=on,calib=32")
    assert e.name == "efficientnet_lite0" and e.form == "w4a4" and e.form in FORMS
    assert e.quant == QuantConfig(w_bits=4, a_bits=4, observer="mse", recon=True, calib=32)
    assert e.spec == "efficientnet_lite0@w4a4:observer=mse,calib=32,recon=on"
    assert get_entry(e.spec).quant == e.quant
    assert get_entry("efficientnet_lite0").quant is None
    with pytest.raises(FormError, match="did you mean 'observer'"):
        get_entry("efficientnet_lite0@w8a8:obsrver=mse")
    with pytest.raises(FormError, match="Did you mean 'w8a8'"):
        get_entry("efficientnet_lite0@w8b8")
    with pytest.raises(FormError, match="between 2 and 8"):
        get_entry("efficientnet_lite0@w16a16")
    with pytest.raises(FormError, match="observer must be one of"):
        get_entry("efficientnet_lite0@w8a8:observer=kl")
    with pytest.raises(UnknownModelError, match="Did you mean"):
        get_entry("efficientnet_lite@w8a8")
    assert parse_form("w6a6:act=sym")[1]["quant"].act_symmetric


def test_job_key_changes_with_quant_config_calibration_and_backend(imagenet_sample):
    from robustart.data.sources import open_source
    from robustart.engine.evaluate import job_config
    from robustart.quant.forms import calibration_set
    from robustart.results.store import stable_hash
    from robustart.zoo.registry import get_entry

    src = open_source(imagenet_sample)
    samples = src.take(4)

    def key(spec, backend="fake"):
        e = get_entry(spec)
        cal = calibration_set(e.quant, src).describe() if e.quant is not None else None
        return stable_hash(job_config(e, "abc", {"name": "clean"}, src, samples, "fp32", 0, backend, cal))

    fp = get_entry("efficientnet_lite0")
    assert "quant" not in job_config(fp, "abc", {"name": "clean"}, src, samples, "fp32")["model"]
    keys = [key("efficientnet_lite0"), key("efficientnet_lite0@w8a8"), key("efficientnet_lite0@w4a4"),
            key("efficientnet_lite0@w8a8:observer=mse"), key("efficientnet_lite0@w8a8:seed=1"),
            key("efficientnet_lite0@w8a8:calib=32"), key("efficientnet_lite0@w8a8", "cpu-int8")]
    assert len(set(keys)) == len(keys)
    assert key("efficientnet_lite0@w8a8") == key("efficientnet_lite0@w8a8:observer=minmax,iters=5")


def test_cli_pgd_on_a_w8a8_model_and_the_quantized_model_is_cached(imagenet_sample, tmp_path, _isolated_home):
    from typer.testing import CliRunner

    from robustart.cli import app

    runner = CliRunner()
    args = ["eval", "--model", "efficientnet_lite0@w8a8:calib=4", "--data", str(imagenet_sample), "--limit", "2",
            "--noise", "pgd:steps=2", "--store", str(tmp_path), "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["form"] == "w8a8" and out["backend"] == "fake" and out["n"] == 2
    assert out["metrics"]["ar"] <= out["metrics"]["clean_top1"]
    assert out["metrics"]["mean_pert_norm"] > 0  # gradients flowed through the fake quant
    cached = list((_isolated_home / "quant").glob("efficientnet_lite0-w8a8-*.pt"))
    assert len(cached) == 1
    from robustart.results.store import ResultsStore

    meta = ResultsStore(tmp_path).read_meta(out["key"])
    assert meta["config"]["model"]["quant"]["calib"] == 4
    assert meta["calibration"]["n"] == 4 and 0 <= meta["calibration"]["overlap_with_evaluated"] <= 2
    # a second model job (another noise) reuses the calibrated model from the cache
    stamp = cached[0].stat().st_mtime_ns
    r = runner.invoke(app, args[:-4] + ["clean", "--store", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    assert cached[0].stat().st_mtime_ns == stamp
    r = runner.invoke(app, ["eval", "--model", "efficientnet_lite0", "--backend", "cpu-int8", "--store", str(tmp_path)])
    assert r.exit_code == 2 and "fp" in r.output
    r = runner.invoke(app, ["eval", "--model", "efficientnet_lite0@w8a8", "--backend", "int9", "--store", str(tmp_path)])
    assert r.exit_code == 2 and "Backends" in r.output


def test_precision_suite_records_across_backends(imagenet_sample, tmp_path):
    from robustart.engine.evaluate import evaluate_suite
    from robustart.noises import expand_noise

    cfgs = expand_noise("precision:w8a8,calib=4")
    assert [c["backend"] for c in cfgs][:2] == ["fake", "cpu-int8"]
    assert expand_noise("precision:w4a4,backend=cpu-int8")[0]["variant"] == "w4a4/cpu-int8"
    from robustart.noises import NoiseSpecError

    with pytest.raises(NoiseSpecError, match="unknown parameter"):
        expand_noise("precision:w8a8,bakend=fake")
    res = evaluate_suite("efficientnet_lite0", imagenet_sample, noise="precision:w8a8,calib=4,backends=fake+cpu-int8",
                         limit=3, store=tmp_path, progress=False)
    assert len(res.jobs) == 2
    fake, cpu = (j.records for j in res.jobs)
    for rec in (fake, cpu):
        assert {"logit_diff", "logit_mean_diff", "fake_pred", "fake_logit_diff", "fake_logit_mean_diff",
                "clean_pred"} <= set(rec.columns)
        assert (rec["logit_diff"] > 0).all()  # the reference is the fp model: quantization shows
    assert (fake["fake_logit_diff"] == 0).all() and (fake["pred"] == fake["fake_pred"]).all()
    assert (cpu["fake_logit_diff"] > 0).all()  # real integer kernels differ from the simulation
    q = res.metrics["quant_precision"]
    assert set(q["top1"]) == {"w8a8/fake", "w8a8/cpu-int8"}
    assert q["acc_delta"]["w8a8/fake"] == pytest.approx(q["top1"]["w8a8/fake"] - res.jobs[0].metrics["clean_top1"])
    assert all(j.meta["calibration"]["n"] == 4 for j in res.jobs)


def test_binary_forms_go_through_binarize_model(imagenet_sample, tmp_path):
    from robustart.engine.evaluate import evaluate
    from robustart.quant.binary import METHODS
    from robustart.zoo.registry import get_entry

    e = get_entry("efficientnet_lite0@binary-bnn")
    assert e.form == "binary" and e.quant == {"method": "bnn"} and e.spec == "efficientnet_lite0@binary-bnn"
    with pytest.raises(FormError, match="Methods: " + ", ".join("binary-" + m for m in METHODS)):
        get_entry("efficientnet_lite0@binary-foo")
    fp = evaluate("efficientnet_lite0", imagenet_sample, limit=2, store=tmp_path, progress=False)
    with pytest.raises(RobustartError, match="python -m robustart.quant.train"):  # float weights, not trained
        evaluate("efficientnet_lite0@binary-bnn", imagenet_sample, limit=2, store=tmp_path, progress=False)
    res = evaluate("efficientnet_lite0@binary-bnn:untrained=yes", imagenet_sample, limit=2, store=tmp_path,
                   progress=False)
    cfg = res.meta["config"]
    assert cfg["model"]["form"] == "binary" and cfg["model"]["quant"] == {"method": "bnn", "untrained": True}
    assert res.key != fp.key
    assert (res.records["prob"].values != fp.records["prob"].values).all()  # the network changed


def test_load_model_builds_the_quantized_form(monkeypatch):
    import robustart
    from robustart.errors import DataError

    monkeypatch.delenv("ROBUSTART_CALIB_DATA", raising=False)
    with pytest.raises(DataError, match="calibration images"):
        robustart.load_model("efficientnet_lite0@w8a8", progress=False)
    m = robustart.load_model("efficientnet_lite0@w8a8:calib_data=builtin", progress=False)
    fp = robustart.load_model("efficientnet_lite0", progress=False)
    n_fp = sum(isinstance(x, (nn.Conv2d, nn.Linear)) for x in fp.modules())
    assert len(Q.quant_layers(m)) == n_fp and m.quant_info["calibration"]["data"] == "builtin"
    assert all(layer.act.scale.item() != 1.0 for layer in Q.quant_layers(m))  # calibrated
