"""Attacks on a real pretrained model (efficientnet_lite0, offline ImageNet weights) and real
ImageNet images: equality with torchattacks, eps-balls, clipping, and the trust checks."""

import pytest
import torch

import robustart
from robustart.noises import attacks as A
from robustart.noises.adversarial import AttackError, attack, attack_mode, verify_adversarial

torchattacks = pytest.importorskip("torchattacks", reason="torchattacks (dev extra, installed by the Makefile)")


@pytest.fixture(scope="module")
def model():
    return robustart.load_model("efficientnet_lite0", progress=False)


def _batch(model, imagenet_sample, n, start=0, stride=41):
    from robustart.data.decode import load_rgb
    from robustart.data.sources import open_source

    samples = open_source(str(imagenet_sample)).take(1000)[start::stride][:n]
    x = torch.stack([model.transform(load_rgb(s.path)[0]) for s in samples]).float() / 255
    return x, torch.tensor([s.label for s in samples]), [s.id for s in samples]


@pytest.fixture(scope="module")
def batch(model, imagenet_sample):
    """24 real ImageNet images at the model's geometry, the 'few dozen' of the equality test."""
    return _batch(model, imagenet_sample, 24)


@pytest.fixture(scope="module")
def small(model, imagenet_sample):
    """8 images the model classifies correctly (so every attack has something to attack)."""
    x, y, ids = _batch(model, imagenet_sample, 16, start=7, stride=53)
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    assert ok.sum() >= 8, "the sample should hold at least 8 correctly classified images here"
    keep = ok.nonzero().flatten()[:8]
    return x[keep], y[keep], [ids[i] for i in keep.tolist()]


def acc(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# --------------------------------------------------------------------------- torchattacks


def test_pgd_equals_torchattacks_same_seed(model, batch):
    x, y, _ = batch
    eps, alpha, steps = 0.5 / 255, 0.125 / 255, 10
    torch.manual_seed(123)
    theirs = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
    torch.manual_seed(123)
    ours = A.pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, keep_best=False, early_stop=False)
    assert torch.equal(ours.x, theirs)  # bit for bit: same start, same steps, same projection
    clean, a_ours, a_theirs = acc(model, x, y), acc(model, ours.x, y), acc(model, theirs, y)
    assert a_ours == a_theirs < clean
    # The evaluation mode (keep the first fooling iterate, stop fooled samples early) can only
    # find more adversarials along the same trajectories.
    torch.manual_seed(123)
    fast = A.pgd(model, x, y, eps=eps, alpha=alpha, steps=steps)
    assert acc(model, fast.x, y) <= a_theirs


@pytest.mark.parametrize("name", ["fgsm", "mim", "pgdl2"])
def test_other_gradient_attacks_equal_torchattacks(model, small, name):
    x, y, _ = small
    x, y = x[:4], y[:4]
    torch.manual_seed(5)
    if name == "fgsm":
        theirs = torchattacks.FGSM(model, eps=1 / 255)(x, y)
        ours = A.pgd(model, x, y, eps=1 / 255, alpha=1 / 255, steps=1, random_init=False, keep_best=False, early_stop=False)
    elif name == "mim":
        theirs = torchattacks.MIFGSM(model, eps=1 / 255, alpha=0.25 / 255, steps=4, decay=1.0)(x, y)
        ours = A.pgd(model, x, y, eps=1 / 255, alpha=0.25 / 255, steps=4, random_init=False, decay=1.0,
                     keep_best=False, early_stop=False)
    else:
        theirs = torchattacks.PGDL2(model, eps=0.5, alpha=0.1, steps=4, random_start=True)(x, y)
        torch.manual_seed(5)
        ours = A.pgd(model, x, y, eps=0.5, alpha=0.1, steps=4, norm="l2", keep_best=False, early_stop=False)
    torch.testing.assert_close(ours.x, theirs, rtol=0, atol=1e-6)


def test_cw_finds_at_least_what_torchattacks_finds(model, small):
    """Same c, steps and learning rate, one binary-search step: our C&W (true class masked with
    -inf, not 0) fools at least the samples torchattacks' CW fools."""
    x, y, _ = small
    x, y = x[:4], y[:4]
    theirs = torchattacks.CW(model, c=1.0, kappa=0, steps=20, lr=0.01)(x, y)
    ours = A.cw_l2(model, x, y, c=1.0, steps=20, lr=0.01, binary_steps=1)
    with torch.no_grad():
        fooled_theirs = model(theirs).argmax(1) != y
        fooled_ours = model(ours.x).argmax(1) != y
    assert bool((fooled_ours | ~fooled_theirs).all())
    assert torch.isfinite(ours.min_norm[fooled_ours]).all()
    torch.testing.assert_close(ours.min_norm[fooled_ours], A.norm_of(ours.x - x, "l2")[fooled_ours])


# --------------------------------------------------------------------------- every attack


ATTACKS = [
    "fgsm:eps=2/255",
    "pgd:eps=1/255,steps=5",
    "pgd:norm=l2,eps=0.5,steps=5",
    "pgd:norm=l1,eps=100,steps=5",
    "mim:eps=1/255,steps=5",
    "cw:eps=2.0,steps=20,binary_steps=1",
    "square:eps=8/255,queries=150",
    "autoattack:eps=1/255",
    "transfer:src=efficientnet_lite1,eps=8/255,steps=5",
]


@pytest.mark.slow
@pytest.mark.parametrize("spec", ATTACKS)
def test_attack_stays_in_ball_and_lowers_accuracy(model, small, spec):
    x, y, ids = small
    if spec.startswith(("square", "cw")):  # hundreds of passes on CPU: fewer images
        x, y, ids = x[:4], y[:4], ids[:4]
    from robustart.noises import parse_noise

    cfg = parse_noise(spec)
    x_adv = attack(model, x, y, spec, ids=ids)
    assert x_adv.shape == x.shape and torch.isfinite(x_adv).all()
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert float(A.norm_of(x_adv - x, cfg["norm"]).max()) <= cfg["eps"] + 1e-6 * max(1, cfg["eps"])
    assert acc(model, x_adv, y) < acc(model, x, y) == 1.0


def test_eps_zero_gives_clean_images(model, small):
    x, y, ids = small
    for spec in ("pgd:eps=0", "fgsm:eps=0", "mim:eps=0"):
        assert torch.equal(attack(model, x, y, spec, ids=ids), x)


def test_more_steps_and_restarts_never_raise_accuracy(model, small):
    x, y, ids = small
    weak = acc(model, attack(model, x, y, "pgd:eps=0.25/255,steps=1,alpha=0.25/255", ids=ids), y)
    strong = acc(model, attack(model, x, y, "pgd:eps=0.25/255,steps=8", ids=ids), y)
    restarts = acc(model, attack(model, x, y, "pgd:eps=0.25/255,steps=8,restarts=3", ids=ids), y)
    assert strong <= weak and restarts <= strong
    assert weak < 1.0  # the weak attack is not vacuous


def test_per_sample_seeds_do_not_depend_on_batching(model, small):
    x, y, ids = small
    whole = attack(model, x, y, "pgd:eps=0.25/255,steps=2", ids=ids, seed=3)
    parts = torch.cat([attack(model, x[i:i + 3], y[i:i + 3], "pgd:eps=0.25/255,steps=2", ids=ids[i:i + 3], seed=3)
                       for i in range(0, len(x), 3)])
    # Same starts and steps; only a gradient coordinate within rounding of zero may take
    # another sign when the batch is split (CPU kernels differ per batch size).
    assert float((whole != parts).float().mean()) < 1e-4
    other = attack(model, x, y, "pgd:eps=0.25/255,steps=2", ids=ids, seed=4)
    assert float((whole != other).float().mean()) > 0.2  # other seed, other starts


# --------------------------------------------------------------------------- trust checks


def test_callers_modes_are_restored(model, small):
    x, y, ids = small
    model.train()
    assert all(p.requires_grad for p in model.parameters())
    try:
        attack(model, x[:2], y[:2], "fgsm", ids=ids[:2])
        assert model.training and model.net.training
        assert all(p.requires_grad for p in model.parameters())
    finally:
        model.eval()
    with attack_mode(model):
        assert not any(p.requires_grad for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_probabilities_are_refused(model, small):
    x, y, ids = small
    probs = torch.nn.Sequential(model, torch.nn.Softmax(dim=1))
    with pytest.raises(AttackError, match="probabilities"):
        attack(probs, x[:2], y[:2], "pgd", ids=ids[:2])


def test_randomised_forward_is_reported(model, small):
    x, y, ids = small
    from robustart.noises import build_noise as build
    from robustart.noises import parse_noise

    class Noisy(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x + 0.01 * torch.randn_like(x))

    noisy = Noisy(model)
    noise = build(parse_noise("fgsm"))
    with torch.no_grad():
        clean = noisy(x[:2])
    noise.apply(noisy, x[:2], y[:2], ids[:2], clean, 0)
    checks = noise.job_checks()
    assert checks["deterministic_forward"] is False and checks["warnings"]
    noise = build(parse_noise("fgsm"))
    with torch.no_grad():
        clean = model(x[:2])
    noise.apply(model, x[:2], y[:2], ids[:2], clean, 0)
    assert noise.job_checks()["deterministic_forward"] is True and not noise.job_checks()["warnings"]


def test_zero_gradients_are_flagged(model, small):
    """A model that rounds its input to 8 bits has zero input gradients everywhere: the
    gradient-masking diagnostic must see it, and PGD must not pretend it attacked."""
    x, y, _ = small

    class Rounding(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(torch.round(x * 255) / 255)

    out = A.pgd(Rounding(model), x[:3], y[:3], eps=1 / 255, alpha=0.25 / 255, steps=2, random_init=False)
    assert out.grad_zero.all()
    out = A.pgd(model, x[:3], y[:3], eps=1 / 255, alpha=0.25 / 255, steps=2, random_init=False)
    assert not out.grad_zero.any()


def test_verify_adversarial_catches_each_violation():
    x = torch.full((2, 3, 4, 4), 0.5)
    verify_adversarial(x + 0.01, x, 0.01 + 1e-9, "linf", "ok")
    with pytest.raises(AttackError, match="exceeds eps"):
        verify_adversarial(x + 0.02, x, 0.01, "linf", "t")
    with pytest.raises(AttackError, match="leave"):
        verify_adversarial(x + 0.6, x, 1.0, "linf", "t")
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(AttackError, match="NaN"):
        verify_adversarial(bad, x, 1.0, "linf", "t")
    with pytest.raises(AttackError, match="l2"):
        verify_adversarial(x + 0.01, x, 0.05, "l2", "t")  # 0.01 on 48 pixels: L2 = 0.069


def test_out_of_memory_splits_the_batch(model, small):
    """On a device out-of-memory error the attack runs on halves; per-sample seeds make the
    result that of the whole batch."""
    from robustart.noises import parse_noise
    from robustart.noises.adversarial import AdversarialNoise

    x, y, ids = small
    sizes = []

    class SmallDevice(AdversarialNoise):
        def _attack(self, model, x, y, gens, seed):
            sizes.append(x.shape[0])
            if x.shape[0] > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return super()._attack(model, x, y, gens, seed)

    cfg = parse_noise("pgd:eps=0.25/255,steps=2")
    with torch.no_grad():
        clean = model(x)
    split = SmallDevice(cfg).apply(model, x, y, ids, clean, 0).x
    whole = AdversarialNoise(cfg).apply(model, x, y, ids, clean, 0).x
    assert sizes == [8, 4, 2, 2, 4, 2, 2]  # tried, halved, halved again until it fits
    assert float((split != whole).float().mean()) < 1e-4


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_autoattack_is_the_published_standard_version(model, norm):
    """What runs under the name AutoAttack: APGD-CE 100 iterations, APGD-T 9 targets x 100 (5 for
    L1), FAB-T 9 targets x 100, Square 5000 queries, in that order."""
    aa = A.standard_autoattack(model, eps=4 / 255, norm=norm)
    assert aa.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"] and aa.version == "standard"
    assert aa.apgd.n_iter == aa.apgd_targeted.n_iter == aa.fab.n_iter == 100
    assert aa.apgd_targeted.n_target_classes == (5 if norm == "l1" else 9) and aa.fab.n_target_classes == 9
    assert aa.square.n_queries == 5000
    # torchattacks' AutoAttack, by contrast, runs 10 APGD iterations and n_classes - 1 targets
    ta = torchattacks.AutoAttack(model, eps=4 / 255, n_classes=1000)
    apgd = ta._autoattack.attacks[0]
    assert type(apgd).__name__ == "APGD" and apgd.steps == 10
