"""ImageNet-S system noise on real JPEGs: every backend decodes, backends that should differ do
(by the measured amounts), the reference variant is the clean evaluation exactly, suite metrics
are joins over records, shards are resumable and read back to the same records."""

import time

import numpy as np
import pytest
import torch

from robustart.imagenet_s import decoders as D
from robustart.imagenet_s import grid as G
from robustart.imagenet_s import resize as R
from robustart.imagenet_s.decoders import pil_simd
from robustart.imagenet_s.pipeline import Pipeline
from robustart.noises import NoiseSpecError, expand_noise

# Read before the autouse fixture points ROBUSTART_HOME at a fresh folder: Pillow-SIMD is set up
# once per machine (`robustart imagenet-s setup`), not per test.
SIMD_DIR = pil_simd.target_dir()
SIMD_SKIP = f"Pillow-SIMD is not set up in {SIMD_DIR}: run `robustart imagenet-s setup`"
GRAY = "n02096051_Airedale.JPEG"  # a grayscale JPEG in the sample


@pytest.fixture(autouse=True)
def _simd_dir(monkeypatch):
    monkeypatch.setenv("ROBUSTART_PILLOW_SIMD", str(SIMD_DIR))


def _needs_simd():
    if not pil_simd.installed(SIMD_DIR):
        pytest.skip(SIMD_SKIP)


@pytest.fixture(scope="module")
def jpegs(imagenet_sample):
    files = sorted(imagenet_sample.glob("n*_*.JPEG"))
    picked = files[:: max(1, len(files) // 6)][:6] + [imagenet_sample / GRAY]
    return [(f.name, f.read_bytes()) for f in picked if f.is_file()]


def _mad(a, b):
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize("name", list(D.DECODERS))
def test_every_decoder_decodes_real_jpegs(name, jpegs):
    if name == "pil-simd":
        _needs_simd()
    why = D.unavailable(name)
    if why:
        pytest.skip(why)
    for fname, data in jpegs:
        ref = D.decode("pil", data)
        img = D.decode(name, data)
        assert img.dtype == np.uint8 and img.shape == ref.shape, (fname, img.shape, ref.shape)
        assert img.flags["C_CONTIGUOUS"]
        # the same picture: close to Pillow's pixels (fast IDCT is the furthest, ~1.2 levels)
        assert _mad(img, ref) < 3.0, (name, fname)


def test_decoders_that_should_differ_do(jpegs):
    def share(a, b):
        return float(np.mean([(D.decode(a, d) != D.decode(b, d)).mean() for _, d in jpegs]))

    # libjpeg-turbo with the accurate IDCT and fancy upsampling is what Pillow runs
    assert max(int(np.abs(D.decode("turbo", d).astype(int) - D.decode("pil", d)).max()) for _, d in jpegs) <= 1
    assert share("turbo-fastdct", "turbo") > 0.2  # measured ~0.7: the fast IDCT moves most values
    assert 0 < share("turbo-fastupsample", "turbo") < 0.2  # only chroma edges move
    assert share("ffmpeg", "pil") > 0.01  # swscale's own YUV->RGB conversion (measured ~0.06)


def test_reference_pipeline_is_the_eval_transform(jpegs, imagenet_sample):
    from robustart.data.decode import load_rgb
    from robustart.data.transforms import eval_transform
    from robustart.zoo.registry import get_entry

    entry = get_entry("efficientnet_lite0")
    tf = eval_transform(entry)
    ref = Pipeline.for_entry(entry, "pil", "model")
    assert ref.resizer == "pil-bicubic"
    for fname, _ in jpegs:
        path = imagenet_sample / fname
        assert torch.equal(ref(path), tf(load_rgb(path)[0])), fname


@pytest.mark.parametrize("geometry", ["eval", "square"])
def test_every_resizer_gives_the_same_picture(jpegs, geometry):
    simd = pil_simd.installed(SIMD_DIR)
    _, data = jpegs[0]
    img = D.decode("pil", data)
    ref = R.apply_geometry(img, "pil-bicubic", 224, 0.875, geometry)
    for name in R.RESIZERS:
        if name.startswith("pil-simd-") and not simd:
            continue
        out = R.apply_geometry(img, name, 224, 0.875, geometry)
        assert out.shape == (224, 224, 3) and out.dtype == np.uint8
        assert _mad(out, ref) < 10.0, (name, _mad(out, ref))  # a wrong size or crop gives tens of levels


def test_square_geometry_is_imagenet_s_resize():
    assert R.resized_size(500, 375, 224, 0.875, "square") == (256, 256)
    assert R.resized_size(500, 375, 224, 0.875, "eval") == (341, 256)
    assert R.resized_size(375, 500, 224, 0.875, "eval") == (256, 341)


def test_pillow_simd_differs_from_pillow_by_one_level_on_few_pixels(jpegs):
    _needs_simd()
    assert D.get("pil-simd").version().startswith("Pillow-SIMD")
    for flt in ("bilinear", "bicubic"):
        diffs = []
        for _, data in jpegs:
            img = D.decode("pil", data)
            a = R.apply_geometry(img, f"pil-{flt}", 224, 0.875, "eval").astype(int)
            b = R.apply_geometry(img, f"pil-simd-{flt}", 224, 0.875, "eval").astype(int)
            diffs.append(np.abs(a - b))
        d = np.stack(diffs)
        # Measured on 50 sample images: 0.3% of values differ, all by one level but 8 of 7.5
        # million (by two: fixed-point rounding in SIMD's accumulators)
        assert d.max() >= 1 and d.max() <= 2, flt
        assert 0 < (d > 0).mean() < 0.05, flt
        assert (d > 1).mean() < 1e-4, flt


def test_pillow_and_opencv_bilinear_differ_by_more(jpegs):
    pil_cv, pil_torch_aa = [], []
    for _, data in jpegs:
        img = D.decode("pil", data)
        a = R.apply_geometry(img, "pil-bilinear", 224, 0.875, "eval")
        pil_cv.append(_mad(a, R.apply_geometry(img, "opencv-linear", 224, 0.875, "eval")))
        pil_torch_aa.append(_mad(a, R.apply_geometry(img, "torch-bilinear-aa", 224, 0.875, "eval")))
    # OpenCV's bilinear does not antialias when shrinking (measured ~1.9 levels on average);
    # torch's antialiased bilinear is Pillow's filter up to rounding (~0.17)
    assert np.mean(pil_cv) > 1.0
    assert np.mean(pil_torch_aa) < 0.5


def test_specs_and_bad_input():
    one = expand_noise("imagenet-s:decoder=opencv,resize=pil-bicubic")
    assert one == [{"name": "imagenet-s", "decoder": "opencv", "resize": "pil-bicubic", "geometry": "eval"}]
    assert expand_noise("imagenet-s:decoder=ffmpeg")[0]["resize"] == "model"
    suite = expand_noise("imagenet-s")
    assert (suite[0]["decoder"], suite[0]["resize"]) == G.REFERENCE
    assert len(suite) == len({(c["decoder"], c["resize"]) for c in suite})
    full = expand_noise("imagenet-s:grid=full,decoders=pil+opencv,resizers=opencv-linear+torch-bicubic")
    assert len(full) == 1 + 2 * 2
    with pytest.raises(NoiseSpecError, match="Decoders: pil, pil-simd, opencv"):
        expand_noise("imagenet-s:decoder=libjpeg")
    with pytest.raises(NoiseSpecError, match="Did you mean 'opencv-linear'"):
        expand_noise("imagenet-s:resize=opencv-lineer")
    with pytest.raises(NoiseSpecError, match="grid must be"):
        expand_noise("imagenet-s:grid=everything")
    with pytest.raises(NoiseSpecError, match="not both"):
        expand_noise("imagenet-s:decoder=pil,grid=full")


def test_pillow_simd_not_set_up_names_the_setup_command(tmp_path, monkeypatch, imagenet_sample):
    from robustart.engine.evaluate import evaluate
    from robustart.errors import RobustartError

    monkeypatch.setenv("ROBUSTART_PILLOW_SIMD", str(tmp_path / "none"))
    assert "robustart imagenet-s setup" in D.unavailable("pil-simd")
    with pytest.raises(RobustartError, match="robustart imagenet-s setup"):
        D.decode("pil-simd", (imagenet_sample / GRAY).read_bytes())
    with pytest.raises(RobustartError, match="robustart imagenet-s setup"):
        evaluate("efficientnet_lite0", imagenet_sample, noise="imagenet-s:decoder=pil-simd", limit=2,
                 progress=False, workers=0)
    assert not any(c["decoder"] == "pil-simd" for c in expand_noise("imagenet-s"))


def test_reference_variant_reproduces_the_clean_evaluation(imagenet_sample):
    from robustart.engine.evaluate import evaluate_suite

    specs = ["clean", "imagenet-s:decoder=pil,resize=model", "imagenet-s:decoder=pil,resize=pil-bicubic"]
    s = evaluate_suite("efficientnet_lite0", imagenet_sample, noise=specs, limit=8, progress=False, workers=0)
    clean, *jobs = [j.records.set_index("sample_id") for j in s.jobs]
    assert "clean_pred" not in clean and len(jobs) == 2
    # identical pixels, so the noise kept the clean logits instead of a second forward pass
    assert [j.meta["checks"]["clean_logits_reused"] for j in s.jobs[1:]] == [8, 8]
    for rec in jobs:
        assert (rec["status"] == "ok").all()
        assert rec["pred"].equals(clean["pred"]) and rec["clean_pred"].equals(clean["pred"])
        assert np.allclose(rec["prob"], clean["prob"], atol=0, rtol=0)
        assert (rec["pixel_diff"] == 0).all() and (rec["pixel_changed"] == 0).all()


def test_suite_metrics_are_joins_over_records(imagenet_sample):
    from robustart.engine.evaluate import evaluate_suite

    spec = "imagenet-s:grid=full,decoders=pil+turbo-fast,resizers=opencv-nearest"
    s = evaluate_suite("efficientnet_lite0", imagenet_sample, noise=spec, limit=8, progress=False, workers=2)
    assert len(s.jobs) == 3  # the reference + 2 decoders x 1 resizer
    m = s.metrics
    recs = {f"{j.meta['config']['noise']['decoder']}/{j.meta['config']['noise']['resize']}": j.records for j in s.jobs}
    top1 = {k: 100 * r["correct"].mean() for k, r in recs.items()}
    assert m["imagenet_s_top1"] == pytest.approx(top1)
    assert m["imagenet_s_worst_top1"] == pytest.approx(min(top1.values()))
    assert m["imagenet_s_range_top1"] == pytest.approx(max(top1.values()) - min(top1.values()))
    assert m["imagenet_s_std_top1"] == pytest.approx(np.std(list(top1.values()), ddof=1))
    assert m["imagenet_s_flip_rate"]["pil/model"] == 0 and m["imagenet_s_pixel_diff"]["pil/model"] == 0
    assert m["imagenet_s_pixel_diff"]["pil/opencv-nearest"] > 2  # nearest without antialias: far off
    flips = sum((r.set_index("sample_id")["pred"] != r.set_index("sample_id")["clean_pred"]) for r in recs.values())
    assert m["imagenet_s_any_flip"] == pytest.approx(100 * (flips > 0).mean())
    assert m["imagenet_s_reference_top1"] == pytest.approx(top1["pil/model"])
    assert s.jobs[1].meta["checks"]["decoder_version"].startswith("Pillow")


def test_build_is_resumable_and_shards_read_back_as_on_the_fly(imagenet_sample, tmp_path):
    from robustart.engine.evaluate import evaluate_suite
    from robustart.imagenet_s import build as B

    out = tmp_path / "variants"
    kw = dict(decoders=["pil", "turbo-fast"], resizers=["opencv-area"], grid="full", limit=6, shard_size=4,
              workers=2, progress=False, log=lambda *_: None)
    m = B.build(imagenet_sample, out, **kw)
    assert m["status"] == "complete" and len(m["variants"]) == 3
    key = B.variant_key("turbo-fast", "opencv-area", "eval")
    shard0, shard1 = out / key / "shard-00000.npz", out / key / "shard-00001.npz"
    t0 = shard0.stat().st_mtime_ns
    shard1.unlink()  # as if the run had stopped before this shard
    time.sleep(0.01)
    m2 = B.build(imagenet_sample, out, **kw)
    assert shard1.is_file() and shard0.stat().st_mtime_ns == t0  # only the missing shard was made
    assert m2["fingerprint"] == m["fingerprint"]  # same pixels, same fingerprint

    spec = f"imagenet-s:shards={out},decoder=turbo-fast,resize=opencv-area"
    cfg = expand_noise(spec)[0]
    assert cfg["shards"]["fingerprint"] == m["variants"][key]["fingerprint"]
    s = evaluate_suite("efficientnet_lite0", imagenet_sample, noise=["imagenet-s:decoder=turbo-fast,resize=opencv-area",
                       spec], limit=6, progress=False, workers=2)
    on_the_fly, from_shards = s.jobs
    assert on_the_fly.key != from_shards.key
    cols = ["sample_id", "pred", "prob", "pixel_diff"]
    assert from_shards.records[cols].equals(on_the_fly.records[cols])
    assert len(expand_noise(f"imagenet-s:shards={out}")) == 3
    with pytest.raises(NoiseSpecError, match="not in"):
        expand_noise(f"imagenet-s:shards={out},decoder=ffmpeg")

    # a shard altered after the build (one pixel) is refused when read, and a forced rerun that
    # fails so leaves the stored result as it was
    from robustart.errors import RobustartError
    from robustart.results.store import ResultsStore

    with np.load(shard0) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["images"][0, 0, 0, 0] ^= 1
    np.savez(shard0, **arrays)
    with pytest.raises(RobustartError, match="changed after the build"):
        evaluate_suite("efficientnet_lite0", imagenet_sample, noise=spec, limit=6, progress=False, workers=0,
                       force=True)
    st = ResultsStore()
    assert st.check(from_shards.key, level="read").status == "complete"
    assert st.read_records(from_shards.key)[cols].equals(from_shards.records[cols])
