"""ABanditNAS: search-space operations, published genotypes, the nas zoo family."""

import pytest
import torch

from robustart.nas.genotypes import ABANDIT_CIFAR10, ABANDIT_MNIST, PUBLISHED, Genotype, load_genotype
from robustart.nas.network import ABanditNetwork, cell_of_layer, reduction_layers
from robustart.nas.ops import OPS, SEARCH_SPACE, DenoisingBlock, DotProductDenoise, GaborFilter, make_op


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", sorted(OPS))
def test_every_operation_runs_forward_and_backward(name, stride):
    torch.manual_seed(0)
    op = make_op(name, 4, stride)
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    y = op(x)
    # odd sizes round up at stride 2 (28 -> 14 -> 7 -> 4), the same for every operation
    assert y.shape == ((2, 4, 4, 4) if stride == 2 else (2, 4, 7, 7))
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for n, p in op.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {n}"


def test_the_paper_search_space_has_nine_operations():
    assert len(SEARCH_SPACE) == 9 and set(SEARCH_SPACE) <= set(OPS)
    assert {"gab_filt_3x3", "dtp_blok_3x3", "skip_connect", "max_pool_3x3", "avg_pool_3x3"} <= set(SEARCH_SPACE)


@pytest.mark.parametrize("kind", ["gab_filt_3x3", "dtp_blok_3x3"])
def test_denoising_blocks_start_as_identity_and_learn(kind):
    torch.manual_seed(0)
    block = make_op(kind, 6, 1)
    assert isinstance(block, DenoisingBlock)
    assert torch.all(block.bn.weight == 0) and torch.all(block.bn.bias == 0)
    x = torch.randn(4, 6, 8, 8)
    block.train()
    assert torch.equal(block(x), x)  # BN scale zero: the residual branch adds nothing yet
    opt = torch.optim.SGD(block.parameters(), lr=0.5)
    target = torch.randn(4, 6, 8, 8)
    ((block(x) - target) ** 2).mean().backward()
    assert block.bn.weight.grad.abs().sum() > 0  # the filter's output reaches the loss
    opt.step()
    assert not torch.allclose(block(x), x)


def test_gabor_filter_follows_its_formula_and_learns_every_parameter():
    import math

    torch.manual_seed(0)
    g = GaborFilter(3, 5)
    k = g.kernel()
    assert k.shape == (3, 1, 5, 5)
    # channel 1, pixel (row 0, col 4): x = 2, y = -2, from the formula in the docstring
    th, psi = g.theta[1].item(), g.psi[1].item()
    sigma = 0.5 + 1.5 * torch.sigmoid(g.sigma[1]).item()
    gamma = math.exp(g.gamma[1].item())
    lam = 2 + 4 * torch.sigmoid(g.lambd[1]).item()
    x, y = 2.0, -2.0
    xr, yr = x * math.cos(th) + y * math.sin(th), -x * math.sin(th) + y * math.cos(th)
    want = math.exp(-(xr**2 + gamma**2 * yr**2) / (2 * sigma**2)) * math.cos(2 * math.pi * xr / lam + psi)
    assert k[1, 0, 0, 4].item() == pytest.approx(want, rel=1e-5, abs=1e-7)
    g(torch.randn(2, 3, 9, 9)).pow(2).sum().backward()
    for name in ("theta", "psi", "sigma", "gamma", "lambd"):  # orientation, phase, scale, aspect, wavelength
        assert getattr(g, name).grad.abs().sum() > 0, name


def test_dot_product_denoising_is_the_normalised_non_local_mean():
    torch.manual_seed(0)
    f = DotProductDenoise()
    for c, hw in [(3, 4), (20, 2)]:  # both evaluation orders (C < HW and C >= HW)
        x = torch.randn(2, c, hw, hw)
        v = x.flatten(2).transpose(1, 2)  # (N, HW, C)
        want = (v @ v.transpose(1, 2)) @ v / (c * hw * hw)  # y_p = sum_q <x_p, x_q> x_q / (C H W)
        assert torch.allclose(f(x), want.transpose(1, 2).reshape_as(x), atol=1e-5)


def _fwd_bwd(net, shape):
    net.train()
    x = torch.rand(*shape, requires_grad=True)
    out = net(x)
    loss = out.sum() + (net.aux_logits.sum() if net.aux_logits is not None else 0)
    loss.backward()
    assert x.grad.abs().sum() > 0
    return out


def test_published_cifar10_genotype_builds_and_trains_at_small_size():
    torch.manual_seed(0)
    net = ABanditNetwork(ABANDIT_CIFAR10, C=4, layers=10, num_classes=10, in_chans=3, auxiliary=True, denoise=True)
    out = _fwd_bwd(net, (2, 3, 32, 32))
    assert out.shape == (2, 10) and net.aux_logits.shape == (2, 10)
    # the public code's layout: reductions at layers 3 and 6, cells a a b b c d d e f f, denoising after 2, 5, 7
    assert reduction_layers(10) == (3, 6)
    assert [cell_of_layer(i, 10, 6) for i in range(10)] == [0, 0, 1, 1, 2, 3, 3, 4, 5, 5]
    assert [i for i, c in enumerate(net.cells) if c.denoise is not None] == [2, 5, 7]
    net.eval()
    net(torch.rand(1, 3, 32, 32))
    assert net.aux_logits is None  # the auxiliary head only runs in training


def test_published_mnist_genotype_builds_and_trains_at_small_size():
    torch.manual_seed(0)
    net = ABanditNetwork(ABANDIT_MNIST, C=4, layers=6, num_classes=10, in_chans=1)
    assert _fwd_bwd(net, (2, 1, 28, 28)).shape == (2, 10)
    # six layers, six distinct cells, one each
    assert [cell_of_layer(i, 6, 6) for i in range(6)] == list(range(6))
    ops = [type(op).__name__ for op in net.cells[0].ops]
    assert ops == ["DilatedSepConv", "DilatedSepConv", "DilatedSepConv", "PoolBN"]


def test_genotypes_round_trip_and_reject_bad_cells(tmp_path):
    import json

    for g in PUBLISHED.values():
        assert Genotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    p = tmp_path / "g.json"
    p.write_text(json.dumps({"genotype": ABANDIT_MNIST.to_dict()}))
    assert load_genotype(str(p)) == ABANDIT_MNIST
    assert load_genotype("abanditnas-cifar10") == ABANDIT_CIFAR10
    bad = ABANDIT_MNIST.to_dict()
    bad["cells"][0][1] = ["sep_conv_3x3", 2]  # node 2 cannot take node 2
    with pytest.raises(Exception, match="earlier node"):
        Genotype.from_dict(bad)
    bad["cells"][0][1] = ["conv_9x9", 0]
    with pytest.raises(Exception, match="unknown operation"):
        Genotype.from_dict(bad)
    with pytest.raises(Exception, match="neither a published genotype"):
        load_genotype(str(tmp_path / "missing.json"))


@pytest.mark.parametrize("name", ["abanditnas-10", "abanditnas-mnist"])
def test_nas_zoo_entries_build_with_exact_params_and_no_published_weights(name):
    from robustart.errors import WeightsNotAvailableError
    from robustart.zoo.build import build_network, load_model
    from robustart.zoo.registry import get_entry, list_entries

    e = get_entry(name)
    assert e.family == "nas" and e.weights.kind == "none" and e.num_classes == 10
    assert name in {x.name for x in list_entries(family="nas")}
    with torch.device("meta"):
        net = build_network(e)
        out = net(torch.zeros(2, *e.input_size))
    assert sum(p.numel() for p in net.parameters()) == e.params
    assert tuple(out.shape) == (2, 10)
    with pytest.raises(WeightsNotAvailableError, match="no weights are published.*robustart nas train"):
        load_model(name)
