"""Natural corruptions: specs, the torch implementation against the imagecorruptions reference on
real ImageNet images, reproducibility, the Noise on a real model, and the mCE metrics."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from robustart.noises import build_noise, expand_noise, parse_noise
from robustart.noises.corruption import CorruptionNoise, check_config
from robustart.noises.corruptions import constants as K
from robustart.noises.corruptions import metrics as M
from robustart.noises.corruptions import ops
from robustart.noises.corruptions import reference as R
from robustart.noises.corruptions import torch_impl as T
from robustart.noises.spec import NoiseSpecError

DETERMINISTIC = [c for c in K.ALL if c not in K.STOCHASTIC]


@pytest.fixture(scope="module")
def model():
    import robustart

    return robustart.load_model("efficientnet_lite0").eval()


@pytest.fixture(scope="module")
def images(imagenet_sample, model):
    """Six real ImageNet images (spread over the classes) at the model's input geometry, uint8."""
    from PIL import Image

    files = sorted(imagenet_sample.glob("n*_*.JPEG"))[::167][:6]
    xs = []
    for f in files:
        with Image.open(f) as im:
            xs.append(model.transform(im.convert("RGB")))
    return torch.stack(xs), [f.name for f in files]


def ours(name, sev, x, ids, seed=0, impl="torch", jpeg=False):
    cfg = {"name": "corruption", "corruption": name, "severity": sev, "impl": impl, "jpeg": jpeg}
    return CorruptionNoise(cfg).corrupt_uint8(x, ids, seed)


# ---------------------------------------------------------------- specs


def test_imagenet_c_spec_is_the_15_by_5_grid():
    configs = expand_noise("imagenet-c")
    assert len(configs) == 75
    assert {(c["corruption"], c["severity"]) for c in configs} == {(c, s) for c in K.COMMON for s in range(1, 6)}
    assert all(c == {"name": "corruption", "corruption": c["corruption"], "severity": c["severity"],
                     "impl": "torch", "jpeg": False} for c in configs)


def test_single_corruption_spec_and_selections():
    assert parse_noise("corruption:glass_blur:3") == {
        "name": "corruption", "corruption": "glass_blur", "severity": 3, "impl": "torch", "jpeg": False}
    assert parse_noise("corruption:glass-blur:3,impl=reference,jpeg=true")["impl"] == "reference"
    all3 = expand_noise("corruption:all:severity=3")
    assert [c["corruption"] for c in all3] == list(K.ALL) and {c["severity"] for c in all3} == {3}
    assert len(expand_noise("corruption:fog")) == 5
    assert [c["corruption"] for c in expand_noise("corruption:blur:2")] == list(K.GROUPS["blur"])
    assert len(expand_noise("imagenet-c:severity=5,impl=reference")) == 15


@pytest.mark.parametrize("spec, words", [
    ("corruption:glas_blur:3", ["glass_blur", "gaussian_noise", "saturate"]),
    ("corruption:glass_blur:6", ["severity", "1..5"]),
    ("corruption:glass_blur:0", ["severity", "1..5"]),
    ("corruption:glass_blur:true", ["severity"]),
    ("corruption:glass_blur:3,impl=numpy", ["impl", "torch", "reference"]),
    ("corruption:glass_blur:3,jpeg=85", ["jpeg", "true or false"]),
    ("corruption:glass_blur:3,sev=2", ["sev", "severity"]),
    ("corruption", ["which corruption", "glass_blur"]),
    ("imagenet-c:fog", ["corruption:NAME"]),
    ("corruption:fog:3:2", ["positional"]),
])
def test_bad_specs_say_what_to_do(spec, words):
    with pytest.raises(NoiseSpecError) as e:
        expand_noise(spec)
    for w in words:
        assert w in str(e.value)


def test_config_dicts_are_checked():
    cfg = parse_noise("corruption:fog:2")
    assert check_config(cfg) == cfg
    with pytest.raises(NoiseSpecError):
        check_config({**cfg, "quality": 85})
    with pytest.raises(NoiseSpecError):
        check_config({**cfg, "corruption": "all"})
    assert isinstance(build_noise(cfg), CorruptionNoise)


# ---------------------------------------------------------------- fidelity: deterministic


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruptions_match_the_reference(images, name):
    x, ids = images
    for sev in K.SEVERITIES:
        a = ours(name, sev, x, ids).double()
        b = ours(name, sev, x, ids, impl="reference").double()
        d = (a - b).abs()
        # at most float rounding at uint8 truncation boundaries: 1 level, on few values
        assert d.max() <= 1, (name, sev, float(d.max()))
        assert d.mean() < 0.25, (name, sev, float(d.mean()))
        # and the corruption did something (compared with the clean images)
        assert (a - x.double()).abs().mean() > 0.5


BIT_IDENTICAL = ("brightness", "saturate", "contrast", "pixelate", "jpeg_compression")


@pytest.mark.parametrize("name", BIT_IDENTICAL)
def test_bit_identical_corruptions_equal_the_reference(images, name):
    """These follow the reference's arithmetic exactly (float64 where its truncation needs it,
    integer fixed point for Pillow's BOX, the same JPEG codec): the same pixels, every value."""
    x, ids = images
    for sev in K.SEVERITIES:
        assert torch.equal(ours(name, sev, x, ids), ours(name, sev, x, ids, impl="reference")), (name, sev)


def test_hsv_round_trip_matches_skimage_bit_for_bit():
    """rgb_to_hsv / hsv_to_rgb against scikit-image on every gray level and many random colours,
    ties between channels included (where the hue's branch decides the result)."""
    from skimage.color import hsv2rgb, rgb2hsv

    g = torch.Generator().manual_seed(0)
    rand = torch.randint(0, 256, (40000, 3), generator=g)
    ties = rand.clone()
    ties[::3, 1] = ties[::3, 0]  # r == g
    ties[1::3, 2] = ties[1::3, 1]  # g == b
    ties[2::3, 2] = ties[2::3, 0]  # r == b
    gray = torch.arange(256)[:, None].expand(256, 3)
    rgb = torch.cat([rand, ties, gray]).double() / 255.0  # (P, 3)
    x = rgb.T.reshape(1, 3, -1, 1)
    h, s, v = ops.rgb_to_hsv(x)
    want = rgb2hsv(rgb.numpy()[:, None, :])[:, 0, :]
    got = torch.stack([h, s, v], -1).reshape(-1, 3).numpy()
    assert np.array_equal(got, want)
    back = ops.hsv_to_rgb(h, (s * 2).clamp(0, 1), (v + 0.3).clamp(0, 1))  # a saturate and a brightness
    hsv = want.copy()
    hsv[:, 1] = np.clip(hsv[:, 1] * 2, 0, 1)
    hsv[:, 2] = np.clip(hsv[:, 2] + 0.3, 0, 1)
    assert np.array_equal(back.reshape(3, -1).T.numpy(), hsv2rgb(hsv[:, None, :])[:, 0, :])


def test_banded_blur_equals_the_dense_product():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 70, 100, generator=g)
    for sigma, mode in ((1.0, "nearest"), (3.0, "symmetric"), (6.0, "reflect")):
        mh = ops.blur_matrix(70, sigma, 4.0, mode)
        mw = ops.blur_matrix(100, sigma, 4.0, mode)
        assert torch.allclose(ops.gaussian_blur(x, sigma, mode), mh @ x @ mw.T, atol=1e-6)


def test_fft_correlation_equals_direct_correlation():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 2, 40, 33, generator=g, dtype=torch.float64).float()
    k = torch.rand(7, 5, generator=g).numpy()
    for mode in ("reflect", "nearest"):
        xp = ops.pad2d(x, 3, 2, mode)
        direct = torch.nn.functional.conv2d(xp.reshape(2, 1, 46, 37), torch.from_numpy(k)[None, None]).view(1, 2, 40, 33)
        assert torch.allclose(ops.conv2d_fft(x, k, mode), direct, atol=1e-5)


def test_displacement_sampling_equals_scipy_map_coordinates():
    from scipy.ndimage import map_coordinates

    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 2, 30, 25, generator=g)
    dy = (torch.rand(1, 30, 25, generator=g) - 0.5) * 12  # reaches well past the borders
    dx = (torch.rand(1, 30, 25, generator=g) - 0.5) * 12
    got = ops.displace_symmetric(x, dy, dx)[0]
    yy, xx = np.meshgrid(np.arange(30), np.arange(25), indexing="ij")
    for c in range(2):
        want = map_coordinates(x[0, c].double().numpy(), [yy + dy[0].double().numpy(), xx + dx[0].double().numpy()],
                               order=1, mode="reflect")
        assert np.abs(got[c].numpy() - want).max() < 1e-4


def test_canny_and_distance_equal_opencv_and_scipy():
    """spatter's edge map is OpenCV's Canny exactly; its distance is the exact Euclidean one."""
    import cv2
    from scipy.ndimage import distance_transform_edt

    g = torch.Generator().manual_seed(4)
    liquid = ops.gaussian_blur(torch.randn(2, 120, 90, generator=g) * 0.3 + 0.65, 2.0)
    lq = torch.floor(liquid.masked_fill(liquid < 0.68, 0.0) * 255)
    edges = T._canny(lq, 50, 150)
    for n in range(2):
        want = cv2.Canny(lq[n].numpy().astype(np.uint8), 50, 150) > 0
        assert want.mean() > 0.02 and np.array_equal(edges[n].numpy(), want)
    dist = T._distance_to(edges, 20)
    for n in range(2):
        want = np.minimum(distance_transform_edt(~edges[n].numpy()), 20)
        assert np.abs(dist[n].numpy() - want).max() < 1e-5


def test_glass_blur_equals_the_sequential_loop_pass_after_pass(images):
    """The whole corruption: blur, uint8, the reference's loop run `iterations` times with the
    same per-pixel offsets (drawn from the sample's generators), blur."""
    from robustart.noises.base import sample_generator

    x, ids = images
    x, ids = x[:2], ids[:2]
    sigma, delta, iterations = K.GLASS_BLUR[2]
    h, w = x.shape[-2:]
    salt = "corruption/glass_blur"
    got = ours("glass_blur", 3, x, ids, seed=9)
    side = 2 * delta
    pairs = T.Draws([sample_generator(9, i, salt) for i in ids]).randint((iterations, h * w), 0, side * side)
    y = ops.gaussian_blur(x.float(), sigma, "nearest").to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for n in range(2):
        for t in range(iterations):
            offs = torch.stack((pairs[n, t] % side, pairs[n, t] // side)) - delta
            y[n] = _reference_glass_loop(y[n], delta, offs.view(2, h, w).numpy())
    want = ops.gaussian_blur(torch.from_numpy(y).permute(0, 3, 1, 2).float(), sigma, "nearest").clamp(0, 255).to(torch.uint8)
    assert torch.equal(got, want)


def test_poisson_alias_tables_reproduce_the_distribution():
    """shot_noise samples Poisson(level / 255 * c) exactly: slot probabilities of the alias
    tables add up to the Poisson pmf for every level."""
    from scipy.stats import poisson

    for c in (60, 12, 3):
        prob, outcome, slots = T._shot_tables(float(c), "cpu")
        prob = prob.view(256, slots).numpy()
        alias_out = outcome.view(256, slots, 2)[..., 1].numpy()
        value = (np.clip(np.arange(slots) / float(c), 0, 1) * 255).astype(np.uint8)
        for level in (0, 1, 77, 128, 255):
            mass = np.zeros(256)
            np.add.at(mass, value, prob[level] / slots)
            np.add.at(mass, alias_out[level], (1 - prob[level]) / slots)
            k = np.arange(4 * c + 100)
            want = np.zeros(256)
            np.add.at(want, (np.clip(k / float(c), 0, 1) * 255).astype(np.uint8), poisson.pmf(k, level / 255.0 * c))
            assert np.abs(mass - want).max() < 1e-12, (c, level)


def test_impulse_positions_are_bernoulli_draws():
    from robustart.noises.base import sample_generator

    d = T.Draws([sample_generator(0, f"s{i}") for i in range(3)])
    n, p = 200_000, 0.09
    for pos, salt in d.bernoulli_positions(n, p):
        assert pos.dtype == torch.int64 and bool((pos[1:] > pos[:-1]).all()) and 0 <= pos.min() and pos.max() < n
        assert abs(len(pos) / n - p) < 4 * (p * (1 - p) / n) ** 0.5
        assert abs(float(salt.float().mean()) - 0.5) < 4 * (0.25 / len(pos)) ** 0.5
        gaps = torch.diff(pos).float()  # geometric: mean 1/p
        assert abs(float(gaps.mean()) - 1 / p) < 0.05 / p


# ---------------------------------------------------------------- fidelity: stochastic


def test_motion_blur_equals_the_reference_for_the_same_angle(images):
    from imagecorruptions.corruptions import _motion_blur

    x, _ = images
    img = x[0].permute(1, 2, 0).numpy()
    for (radius, sigma), angle in zip(K.MOTION_BLUR, (-44.0, -12.5, 0.0, 17.3, 44.9)):
        ref = _motion_blur(img, radius, sigma, angle)
        got = ops.motion_blur(x[:1].float(), radius, sigma, [angle])[0].permute(1, 2, 0).numpy()
        assert np.abs(ref - got).max() < 1e-3


def test_motion_blur_gather_path_equals_slice_path(images):
    """The batched-gather path (used on CUDA) gives the CPU path's result, per-sample angles."""
    x, _ = images
    angles = [-44.0, -20.0, 0.0, 13.0, 30.0, 45.0]
    a = ops.motion_blur(x.float(), 15, 8, angles, gather=False)
    b = ops.motion_blur(x.float(), 15, 8, angles, gather=True)
    assert torch.allclose(a, b, atol=1e-3)


def test_zoom_matrix_equals_the_reference_clipped_zoom():
    from imagecorruptions.corruptions import clipped_zoom

    rng = np.random.default_rng(0)
    a = rng.random((224, 224, 1))
    for z in (1.07, 1.3, 2.5, 4.5):
        ref = clipped_zoom(a, z)[..., 0]
        m = ops.zoom_matrix(224, z)
        got = (m @ torch.from_numpy(a[..., 0]) @ m.T).numpy()
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < 1e-9


def _reference_glass_loop(x: np.ndarray, delta: int, offs: np.ndarray) -> np.ndarray:
    """The reference's glass-blur pixel loop in plain Python, with given offsets (dx, dy)."""
    x = x.copy()
    h, w = x.shape[:2]
    for r in range(h - delta, delta, -1):
        for c in range(w - delta, delta, -1):
            dx, dy = offs[0, r, c], offs[1, r, c]
            x[r, c], x[r + dy, c + dx] = x[r + dy, c + dx], x[r, c]  # views: in effect a copy
    return x


def test_glass_blur_pointer_jumping_equals_the_sequential_loop():
    g = torch.Generator().manual_seed(0)
    h, w = 23, 19
    x = torch.randint(0, 256, (2, h * w, 3), generator=g).float()
    for delta in (1, 2, 3, 4):
        side = 2 * delta
        pairs = torch.randint(0, side * side, (2, h * w), generator=g)
        offs = torch.stack((pairs % side, pairs // side), 1) - delta  # (dx, dy)
        take = T._glass_sources(h, w, delta, pairs)
        got = x.gather(1, take[:, :, None].expand(-1, -1, 3))
        for n in range(2):
            want = _reference_glass_loop(x[n].view(h, w, 3).numpy(), delta, offs[n].view(2, h, w).numpy())
            assert np.array_equal(got[n].view(h, w, 3).numpy(), want)


def test_reference_glass_loop_copies_rather_than_swaps():
    """The fact the parallel glass blur relies on: the reference duplicates pixels."""
    from imagecorruptions.corruptions import _shuffle_pixels_njit_glass_blur

    x = np.repeat(np.arange(40 * 40).reshape(40, 40, 1), 3, axis=2).astype(np.int64)
    y = _shuffle_pixels_njit_glass_blur(40, 40, x.copy(), (1, 2, 1), 5)
    assert len(np.unique(y[..., 0])) < 0.8 * 1600  # a permutation would keep all 1600


# corruption -> (severities, seeds, relative tolerance on the mean absolute change from the
# clean image). Corruptions with few random choices per image (an angle, one of six frost
# photos, one fog map) vary a lot from draw to draw, so they are averaged over more seeds.
STAT_TOL = {
    "gaussian_noise": ((1, 3, 5), 1, 0.02), "shot_noise": ((1, 3, 5), 1, 0.02),
    "impulse_noise": ((1, 3, 5), 1, 0.03), "speckle_noise": ((1, 3, 5), 1, 0.02),
    "glass_blur": ((1, 3, 5), 1, 0.05), "elastic_transform": ((1, 3, 5), 1, 0.05),
    "spatter": ((1, 3, 5), 4, 0.10), "snow": ((1, 3, 5), 1, 0.08),
    "motion_blur": ((1, 5), 4, 0.06), "fog": ((1, 5), 8, 0.10), "frost": ((1, 5), 8, 0.15),
}


@pytest.mark.parametrize("name", sorted(K.STOCHASTIC))
def test_stochastic_corruptions_match_reference_statistics(images, name):
    x, ids = images
    sevs, seeds, tol = STAT_TOL[name]
    changes = []
    for sev in sevs:
        a = torch.cat([ours(name, sev, x, ids, seed=k) for k in range(seeds)]).double()
        b = torch.cat([ours(name, sev, x, ids, seed=k, impl="reference") for k in range(seeds)]).double()
        xx = x.double().repeat(seeds, 1, 1, 1)
        ca, cb = float((a - xx).abs().mean()), float((b - xx).abs().mean())
        assert abs(ca - cb) <= tol * cb, (name, sev, ca, cb)
        assert abs(float(a.std()) - float(b.std())) <= 0.1 * float(b.std()), (name, sev)
        changes.append(ca)
    assert changes == sorted(changes)  # stronger with severity


def test_stochastic_severities_are_distinguished(images):
    """A wrong per-severity constant would show: each severity's change sits nearer the
    reference at the same severity than at the neighbouring one (gaussian noise)."""
    x, ids = images
    ref = [float((ours("gaussian_noise", s, x, ids, impl="reference").double() - x).abs().mean()) for s in K.SEVERITIES]
    for s in K.SEVERITIES:
        c = float((ours("gaussian_noise", s, x, ids).double() - x).abs().mean())
        nearest = min(range(5), key=lambda i: abs(ref[i] - c))
        assert nearest == s - 1


# ---------------------------------------------------------------- reproducibility and the Noise


@pytest.mark.parametrize("name", sorted(K.STOCHASTIC))
def test_per_sample_randomness_does_not_depend_on_the_batch(images, name):
    """A sample's corruption depends on (seed, id) alone: not on its neighbours, the batch's
    size or order, or how the CPU path splits the batch into chunks."""
    x, ids = images
    full = ours(name, 3, x, ids, seed=7)
    assert torch.equal(full, ours(name, 3, x, ids, seed=7))
    alone = ours(name, 3, x[3:4], ids[3:4], seed=7)
    assert torch.equal(full[3:4], alone)
    mixed = ours(name, 3, torch.cat([x[4:], x[1:2]]), ids[4:] + ids[1:2], seed=7)  # other company
    assert torch.equal(mixed, torch.cat([full[4:], full[1:2]]))
    reordered = ours(name, 3, x.flip(0), ids[::-1], seed=7)
    assert torch.equal(full, reordered.flip(0))
    assert not torch.equal(full, ours(name, 3, x, ids, seed=8))


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_cpu_chunking_changes_no_output(images, monkeypatch, chunk):
    x, ids = images
    want = {name: ours(name, 2, x, ids, seed=5) for name in K.ALL}
    monkeypatch.setattr(T, "CPU_CHUNK", chunk)
    monkeypatch.setattr(T, "CPU_CHUNK_OF", {})
    for name in K.ALL:
        assert torch.equal(ours(name, 2, x, ids, seed=5), want[name]), name


def test_reference_is_reproducible_when_seeded(images):
    x, ids = images
    for name in ("glass_blur", "impulse_noise", "frost"):
        a = ours(name, 2, x[:2], ids[:2], seed=3, impl="reference")
        b = ours(name, 2, x[:2], ids[:2], seed=3, impl="reference")
        assert torch.equal(a, b)


def test_jpeg_option_matches_the_released_files_step(images):
    x, ids = images
    plain = ours("contrast", 2, x, ids)
    ours_j = ours("contrast", 2, x, ids, jpeg=True)
    ref_j = ours("contrast", 2, x, ids, impl="reference", jpeg=True)
    assert not torch.equal(plain, ours_j)
    direct = torch.from_numpy(np.stack([R.jpeg_roundtrip_pil(p.permute(1, 2, 0).numpy(), 85) for p in plain]))
    assert torch.equal(ours_j, direct.permute(0, 3, 1, 2))  # torchvision's codec == Pillow's here
    assert (ours_j.double() - ref_j.double()).abs().max() <= 2


def test_noise_apply_on_a_real_model(images, model):
    x, ids = images
    xf = x.float() / 255
    y = torch.zeros(len(ids), dtype=torch.long)
    with torch.inference_mode():
        clean = model(xf)
    noise = build_noise(parse_noise("corruption:gaussian_noise:5"))
    out = noise.apply(model, xf, y, ids, clean, 0)
    assert out.x.shape == xf.shape and out.x.dtype == xf.dtype
    assert 0 <= out.x.min() and out.x.max() <= 1
    assert torch.equal((out.x * 255).round() / 255, out.x)  # whole uint8 levels
    with torch.inference_mode():
        noisy = model(out.x)
    # severe noise moves the model: its predictions change on some of these images
    assert (noisy.argmax(1) != clean.argmax(1)).any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(images):
    x, ids = images
    for name in DETERMINISTIC:
        a = ours(name, 3, x, ids)
        b = ours(name, 3, x.cuda(), ids).cpu()
        assert (a.double() - b.double()).abs().max() <= (8 if name == "jpeg_compression" else 1), name
    for name in sorted(K.STOCHASTIC):  # same statistics (the device's generators differ)
        a = ours(name, 3, x, ids).double()
        b = ours(name, 3, x.cuda(), ids).cpu().double()
        ca, cb = float((a - x).abs().mean()), float((b - x).abs().mean())
        assert abs(ca - cb) <= 0.2 * cb, name


# ---------------------------------------------------------------- metrics


def _table(fn):
    return pd.DataFrame({s: {c: fn(c, s) for c in K.COMMON} for s in K.SEVERITIES})


def test_mce_of_alexnet_is_100_percent():
    table = _table(lambda c, s: K.ALEXNET_ERROR[c])
    assert M.ce(table).round(12).eq(1.0).all()
    assert math.isclose(M.mce(table), 1.0)
    assert math.isclose(M.relative_mce(table, K.ALEXNET_CLEAN_ERROR), 1.0)
    assert math.isclose(M.mean_error(table), np.mean(list(K.ALEXNET_ERROR.values())))


def test_mce_and_relative_mce_by_hand():
    # errors grow linearly with severity around half of AlexNet's mean
    table = _table(lambda c, s: K.ALEXNET_ERROR[c] * (0.3 + 0.1 * s))  # mean over s: 0.6 x AlexNet
    assert math.isclose(M.mce(table), 0.6)
    clean = 0.2
    want = np.mean([(0.6 * K.ALEXNET_ERROR[c] - clean) / (K.ALEXNET_ERROR[c] - 0.4348) for c in K.COMMON])
    assert math.isclose(M.relative_mce(table, clean), want)
    assert M.relative_mce(table, clean) != M.mce(table)
    # an incomplete grid has no mCE, but still a mean error over what is there
    partial = table.drop(index="fog")
    assert math.isnan(M.mce(partial)) and not math.isnan(M.mean_error(partial))
    assert math.isnan(M.mce(table.drop(columns=5)))


def _records(correct, clean_correct, prefix="img"):
    n = len(correct)
    return pd.DataFrame({
        "sample_id": [f"{prefix}{i}" for i in range(n)], "label": 0, "pred": 0, "correct": correct,
        "status": "ok", "clean_pred": 0, "clean_correct": clean_correct,
    })


def test_summarize_from_job_records():
    from robustart.noises.corruption import summarize

    rng = np.random.default_rng(0)
    clean = rng.random(40) < 0.8
    results, expect = [], {}
    for c in K.COMMON:
        for s in K.SEVERITIES:
            correct = rng.random(40) < (0.9 - 0.12 * s)
            rec = _records(correct, clean)
            rec.loc[0, "status"] = "failed"  # a failed sample counts nowhere
            results.append(SimpleNamespace(records=rec, meta={"config": {"noise": check_config(
                {"name": "corruption", "corruption": c, "severity": s, "impl": "torch", "jpeg": False})}}))
            expect[(c, s)] = 1 - correct[1:].mean()
    out = summarize(results)
    ce = {c: sum(expect[(c, s)] for s in K.SEVERITIES) / (5 * K.ALEXNET_ERROR[c]) for c in K.COMMON}
    assert math.isclose(out["mce"], round(100 * np.mean(list(ce.values())), 4), abs_tol=1e-3)
    assert math.isclose(out["clean_error"], 100 * (1 - clean[1:].mean()), abs_tol=1e-3)
    assert math.isclose(out["corruption_errors"]["fog"]["3"], 100 * expect[("fog", 3)], abs_tol=1e-3)
    assert "corruption_note" not in out
    # mixing implementations keeps them apart
    ref = [SimpleNamespace(records=r.records, meta={"config": {"noise": {**r.meta["config"]["noise"], "impl": "reference"}}})
           for r in results[:5]]
    mixed = summarize(results + ref)
    assert "mce@torch" in mixed and mixed["mce@reference"] is None


def test_prerendered_cells_split_ids():
    rec = pd.concat([
        _records([True, False], [True, True], "fog/3/n01440764/"),
        _records([False, False, True], [True, True, True], "glass_blur/1/n01443537/"),
    ])
    table = M.error_table(M.prerendered_cells(rec))
    assert math.isclose(table.loc["fog", 3], 0.5) and math.isclose(table.loc["glass_blur", 1], 2 / 3)
