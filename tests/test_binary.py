"""Binarization: exact +-alpha weights and +-1 activations per method, the methods' gradient
estimators, model surgery on real timm networks, and the distillation recipe on real images."""

import copy
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from robustart.quant.binary import (
    METHODS,
    BinaryConv2d,
    BinaryLinear,
    RPReLU,
    binarize_model,
    binary_layers,
    ede_schedule,
    set_progress,
)
from robustart.quant.train import distillation_loss, train_binary


def _conv(method, seed=0, groups=1):
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(8, 6, 3, padding=1, groups=groups, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.3 + 0.05)
    return BinaryConv2d.from_float(conv, method), conv


def _expected_alpha(method, w):
    rows = w.reshape(w.shape[0], -1)
    if method == "bnn":
        return torch.ones(w.shape[0])
    if method in ("xnor", "reactnet"):
        return rows.abs().mean(1)
    std = (rows - rows.mean(1, keepdim=True)) / rows.std(1, keepdim=True)
    m = std.abs().mean(1)
    return 2.0 ** torch.round(torch.log2(m)) if method == "irnet" else m


def test_unknown_method_is_refused():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 2, 1))
    with pytest.raises(ValueError, match="unknown binarization method 'dorefa'.*bnn, xnor, irnet"):
        binarize_model(net, "dorefa")


@pytest.mark.parametrize("method", METHODS)
def test_binary_weight_is_exactly_plus_minus_alpha(method):
    layer, conv = _conv(method)
    set_progress(layer, 0.3)
    wb = layer.binary_weight().detach()
    alpha = _expected_alpha(method, conv.weight.detach())
    assert torch.allclose(layer.alpha(), alpha, rtol=1e-6, atol=0)
    # every entry is +alpha_c or -alpha_c exactly, with the sign of the (balanced) latent weight
    a = layer.alpha().view(-1, 1, 1, 1).expand_as(wb)
    assert torch.equal(wb.abs(), a)
    ref = conv.weight - conv.weight.mean((1, 2, 3), keepdim=True) if method in ("irnet", "dirnet") else conv.weight
    assert torch.equal(torch.sign(wb), torch.where(ref >= 0, 1.0, -1.0))
    assert torch.equal(layer.weight_signs(), torch.sign(wb))
    if method == "irnet":  # a bit shift: alpha is a power of two
        assert torch.equal(torch.log2(layer.alpha()), torch.round(torch.log2(layer.alpha())))
    # the same for a linear layer
    lin = nn.Linear(10, 4)
    bl = BinaryLinear.from_float(lin, method)
    wb = bl.binary_weight().detach()
    assert torch.equal(wb.abs(), bl.alpha()[:, None].expand_as(wb))
    assert torch.allclose(bl.alpha(), _expected_alpha(method, lin.weight.detach()), rtol=1e-6, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_activations_are_plus_minus_one(method):
    layer, _ = _conv(method)
    x = torch.randn(2, 8, 5, 5)
    x[0, 0, 0, 0] = 0.0  # sign(0) must be a binary value too
    if method == "reactnet":
        with torch.no_grad():
            layer.shift.copy_(torch.linspace(-0.5, 0.5, 8))
    xb = layer.binarize_input(x)
    assert set(xb.unique().tolist()) == {-1.0, 1.0}
    shifted = x + layer.shift.view(1, -1, 1, 1) if method == "reactnet" else x
    assert torch.equal(xb, torch.where(shifted >= 0, 1.0, -1.0))
    # the layer's output is the conv of the binarized input with the binarized weight
    y = layer(x)
    ref = F.conv2d(xb, layer.binary_weight(), layer.bias, padding=1)
    assert torch.allclose(y, ref, atol=1e-5)


def _input_grad(layer, x):
    x = x.clone().requires_grad_(True)
    layer.binarize_input(x).sum().backward()
    return x.grad


def test_ste_gradient_is_zero_outside_the_unit_interval():
    x = torch.linspace(-3, 3, 61).view(1, 1, 61).expand(1, 8, 61).contiguous()
    for method in ("bnn", "xnor"):
        layer = BinaryConv2d.from_float(nn.Conv2d(8, 4, 1), method)
        g = _input_grad(layer, x.unsqueeze(-1)).squeeze(-1)
        assert torch.equal(g, (x.abs() <= 1).float())
    # weights: the BNN / ReActNet estimators pass the gradient where |W| <= 1 only
    for method in ("bnn", "reactnet"):
        layer = BinaryLinear.from_float(nn.Linear(5, 3), method)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([[-2.0, -1.0, -0.5, 0.5, 1.5]] * 3))
        up = torch.randn(3, 5)
        (layer.binary_weight() * up).sum().backward()
        # (ReActNet: alpha * grad / alpha, so up to rounding)
        assert torch.allclose(layer.weight.grad, up * (layer.weight.abs() <= 1), rtol=1e-6, atol=0)
        assert torch.equal(layer.weight.grad == 0, layer.weight.abs() > 1)


def test_ede_schedule_and_gradient_match_irnet():
    torch.manual_seed(0)
    assert ede_schedule(0.0) == pytest.approx((10.0, 0.1))  # k = 1/t while t < 1
    assert ede_schedule(0.5) == pytest.approx((1.0, 1.0))
    assert ede_schedule(1.0) == pytest.approx((1.0, 10.0))
    layer = BinaryConv2d.from_float(nn.Conv2d(8, 4, 1), "irnet")
    x = torch.randn(2, 8, 4, 4) * 2
    for p in (0.0, 0.25, 0.8):
        set_progress(layer, p)
        k, t = ede_schedule(p)
        g = _input_grad(layer, x)
        assert torch.allclose(g, k * t * (1 - torch.tanh(t * x) ** 2), rtol=1e-5, atol=1e-5)
    # the weight gradient is that of the soft surrogate alpha * k * tanh(t * W_std), through
    # the balance/standardise step
    set_progress(layer, 0.25)
    k, t = ede_schedule(0.25)
    up = torch.randn(layer.weight.shape)
    (layer.binary_weight() * up).sum().backward()
    got = layer.weight.grad.clone()
    w = layer.weight.detach().clone().requires_grad_(True)
    rows = w.reshape(4, -1)
    ws = ((rows - rows.mean(1, keepdim=True)) / rows.std(1, keepdim=True)).reshape_as(w)
    (layer.alpha().view(-1, 1, 1, 1) * k * torch.tanh(t * ws) * up).sum().backward()
    assert torch.allclose(got, w.grad, rtol=1e-4, atol=1e-6)
    assert got.abs().sum() > 0


def test_dte_gradient_is_distribution_sensitive():
    torch.manual_seed(0)
    layer = BinaryConv2d.from_float(nn.Conv2d(3, 4, 1), "dirnet")
    x = torch.randn(4, 3, 5, 5) * torch.tensor([0.1, 1.0, 5.0]).view(1, 3, 1, 1)
    set_progress(layer, 0.9)
    k, t = ede_schedule(0.9)
    sigma = x.std(dim=(0, 2, 3), keepdim=True)
    g = _input_grad(layer, x)
    assert torch.allclose(g, k * t * (1 - torch.tanh(t * x / sigma) ** 2), rtol=1e-5, atol=1e-5)
    # the same relative position in every channel gets the same gradient, whatever its scale
    z = x / sigma
    assert torch.allclose(g, k * t * (1 - torch.tanh(t * z) ** 2), rtol=1e-5, atol=1e-5)


def test_reactnet_approx_sign_gradient_and_rprelu():
    layer = BinaryConv2d.from_float(nn.Conv2d(2, 2, 1), "reactnet")
    with torch.no_grad():
        layer.shift.copy_(torch.tensor([0.0, 0.5]))
    x = torch.linspace(-1.5, 1.5, 31).view(1, 1, 31, 1).expand(1, 2, 31, 1).contiguous()
    x.requires_grad_(True)
    layer.binarize_input(x).sum().backward()
    s = (x + layer.shift.view(1, 2, 1, 1)).detach()
    assert torch.allclose(x.grad, (2 - 2 * s.abs()).clamp_min(0))
    layer.binarize_input(x).sum().backward()
    assert layer.shift.grad is not None and layer.shift.grad.abs().sum() > 0
    r = RPReLU(2)
    with torch.no_grad():
        r.gamma.copy_(torch.tensor([0.5, -1.0]))
        r.zeta.copy_(torch.tensor([0.1, 0.2]))
    y = torch.randn(3, 2, 4, 4)
    shifted = y - r.gamma.view(1, 2, 1, 1)
    want = torch.where(shifted >= 0, shifted, 0.25 * shifted) + r.zeta.view(1, 2, 1, 1)
    assert torch.allclose(r(y), want)


@pytest.mark.parametrize("method", METHODS)
def test_binarize_timm_resnet18(method):
    torch.manual_seed(0)
    # zero_init_last=False: timm zero-initialises the last BN of each block, which would
    # stop all gradient to the block's convs at init
    net = timm.create_model("resnet18", num_classes=10, zero_init_last=False)
    assert binarize_model(net, method) is net
    assert type(net.conv1) is nn.Conv2d and type(net.fc) is nn.Linear  # first / last stay FP
    layers = binary_layers(net)
    assert len(layers) == 16 + 3  # 2 convs x 8 blocks + 3 downsample convs
    assert not any(isinstance(m, nn.ReLU) for m in net.modules())
    act = RPReLU if method == "reactnet" else nn.Hardtanh
    assert isinstance(net.act1, act) and isinstance(net.layer4[1].act2, act)
    if method == "reactnet":
        assert net.layer2[0].act1.gamma.numel() == 128
    out = net(torch.rand(2, 3, 64, 64))
    out.square().sum().backward()
    for m in layers:
        assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="binarized already"):
        binarize_model(net, method)


def test_binarize_real_efficientnet_lite0():
    import robustart

    model = robustart.load_model("efficientnet_lite0")
    fp = copy.deepcopy(model)
    binarize_model(model.net, "bnn")
    net = model.net
    assert type(net.conv_stem).__name__ == "Conv2dSame" and type(net.classifier) is nn.Linear
    convs = {n: m for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    for name, m in convs.items():
        depthwise = m.groups > 1 and m.groups == m.in_channels
        assert isinstance(m, BinaryConv2d) == (name != "conv_stem" and not depthwise), name
    assert sum(isinstance(m, BinaryConv2d) for m in convs.values()) == 32  # pointwise + conv_head
    # the latent weights are the real ones; the state dict keys are unchanged
    fp_state = fp.state_dict()
    for k, v in model.state_dict().items():
        if k in fp_state:
            assert torch.equal(v, fp_state[k]), k
    assert model(torch.rand(1, 3, 96, 96)).shape == (1, 1000)
    # binarize_depthwise=True binarizes the depthwise convs too (TF 'same' padding kept)
    dw = copy.deepcopy(fp)
    binarize_model(dw.net, "xnor", binarize_depthwise=True)
    assert isinstance(dw.net.blocks[1][0].conv_dw, BinaryConv2d) and dw.net.blocks[1][0].conv_dw.same_pad
    assert dw(torch.rand(1, 3, 96, 96)).shape == (1, 1000)


def _sample_batch(model, root, n=16, size=112):
    from robustart.quant.train import image_batches

    (x, y), = image_batches(model, root, limit=n, batch_size=n)
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False), y


@pytest.mark.parametrize("method", ["irnet", "reactnet"])
def test_distillation_lowers_the_loss_on_real_images(imagenet_sample, method):
    import robustart

    torch.manual_seed(0)
    teacher = robustart.load_model("efficientnet_lite0")
    student = copy.deepcopy(teacher)
    binarize_model(student.net, method)
    batch = _sample_batch(teacher, imagenet_sample)
    res = train_binary(student, teacher, [batch], steps=12, lr=1e-3, progress=False)
    assert len(res.losses) == 12 and all(math.isfinite(v) for v in res.losses)
    # the loss on the same 16 images, in the same (train) mode, at the end vs the start
    assert res.losses[-1] < 0.8 * res.losses[0], res.losses
    for m in binary_layers(student):  # still exactly +-alpha after training
        wb = m.binary_weight().detach()
        assert torch.equal(wb.abs(), m.alpha().view(-1, *([1] * (wb.dim() - 1))).expand_as(wb))


class _Interrupted(Exception):
    pass


class _StopAfter:
    """The same batches, but the run is interrupted after `n` of them."""

    def __init__(self, batches, n):
        self.batches, self.n = batches, n

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for i, b in enumerate(self.batches):
            if i == self.n:
                raise _Interrupted
            yield b


def test_resume_gives_the_same_state(tmp_path, imagenet_sample):
    torch.manual_seed(0)
    teacher = timm.create_model("resnet18", num_classes=1000).eval()
    student0 = binarize_model(copy.deepcopy(teacher), "dirnet")
    x, y = _sample_batch(robustart_model(), imagenet_sample, n=8, size=48)
    data = [(x[i:i + 2], y[i:i + 2]) for i in range(0, 8, 2)]  # 4 batches
    kw = dict(steps=6, lr=1e-3, kd_weight=0.5, temperature=2.0, progress=False)

    straight = copy.deepcopy(student0)
    r1 = train_binary(straight, teacher, data, checkpoint=tmp_path / "a.pt", **kw)

    resumed = copy.deepcopy(student0)
    with pytest.raises(_Interrupted):  # dies during step 4 (the second epoch starts at step 5)
        train_binary(resumed, teacher, _StopAfter(data, 3), checkpoint=tmp_path / "b.pt",
                     checkpoint_every=2, **kw)
    assert torch.load(tmp_path / "b.pt", weights_only=True)["step"] == 2
    fresh = copy.deepcopy(student0)  # a new process: the state comes from the checkpoint only
    r2 = train_binary(fresh, teacher, data, checkpoint=tmp_path / "b.pt", checkpoint_every=2, **kw)
    assert r2.step == 6 and r2.losses == r1.losses
    s1, s2 = straight.state_dict(), fresh.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k
    with pytest.raises(ValueError, match="made with"):
        train_binary(copy.deepcopy(student0), teacher, data, checkpoint=tmp_path / "b.pt",
                     **{**kw, "lr": 2e-3})


def robustart_model():
    import robustart

    return robustart.load_model("efficientnet_lite0", pretrained=False)


def test_distillation_loss():
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    y = torch.tensor([1, 2, 3, 4])
    p = F.softmax(t / 2, 1)
    kl = (p * (p.log() - F.log_softmax(s / 2, 1))).sum(1).mean()
    got = distillation_loss(s, t, y, kd_weight=0.7, temperature=2.0)
    assert torch.allclose(got, 0.7 * 4 * kl + 0.3 * F.cross_entropy(s, y))
    assert torch.allclose(distillation_loss(s, None, y, kd_weight=0.0), F.cross_entropy(s, y))
    with pytest.raises(ValueError, match="needs a teacher"):
        distillation_loss(s, None, y)
    with pytest.raises(ValueError, match="kd_weight must be in"):
        distillation_loss(s, t, y, kd_weight=1.5)
    with pytest.raises(ValueError, match="no binarized layers"):
        train_binary(nn.Linear(3, 2), None, [(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long))],
                     kd_weight=0.0, progress=False)


@pytest.mark.parametrize("method", METHODS)
def test_kernel_path_matches_the_fake_binarized_forward(method):
    pytest.importorskip("robustart.kernels", reason="robustart.kernels (low-bit kernels) is not installed")
    from robustart.quant.binary import use_kernels

    torch.manual_seed(0)
    lin = BinaryLinear.from_float(nn.Linear(70, 9), method)  # 70: not a multiple of 32 bits
    conv = BinaryConv2d.from_float(nn.Conv2d(6, 5, 3, stride=2, padding=1), method)
    if method == "reactnet":
        with torch.no_grad():
            lin.shift.uniform_(-0.3, 0.3)
            conv.shift.uniform_(-0.3, 0.3)
    x2, x4 = torch.randn(4, 70), torch.randn(2, 6, 9, 9)
    for backend in ("torch", "triton"):  # triton: the interpreter on CPU, the GPU on CUDA
        for layer, x in ((lin, x2), (conv, x4)):
            ref = layer(x)
            got = layer.kernel_forward(x, backend=backend)
            assert torch.allclose(got, ref, rtol=1e-5, atol=1e-4), (backend, type(layer).__name__)
    # a whole binarized network: kernels when autograd is off, the fake path when it is on
    net = timm.create_model("resnet18", num_classes=10, zero_init_last=False).eval()
    binarize_model(net, method)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = net(x)
        use_kernels(net, "torch")
        got = net(x)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-3)
    xg = x.clone().requires_grad_(True)
    net(xg).sum().backward()  # attacks still get input gradients
    assert xg.grad is not None and xg.grad.abs().sum() > 0
