"""Precision noise: specs, CPU variants through the engine on real images, flags restored, and
a clear error for the variants that need CUDA."""

import numpy as np
import pytest
import torch

from robustart.errors import RobustartError
from robustart.noises import NoiseSpecError, build_noise, expand_noise
from robustart.noises.precision import CUDA_ONLY, PRECISIONS, _flags


def test_specs():
    assert expand_noise("precision:bf16") == [{"name": "precision", "variant": "bf16"}]
    assert expand_noise("precision:variant=channels-last") == [{"name": "precision", "variant": "channels_last"}]
    assert expand_noise("precision:tf32") == [{"name": "precision", "variant": "tf32"}]  # parses anywhere
    suite = [c["variant"] for c in expand_noise("precision")]
    assert suite[0] == "fp32" and {"fp16", "bf16", "channels_last"} <= set(suite)
    assert set(suite) >= set(CUDA_ONLY) if torch.cuda.is_available() else not set(suite) & set(CUDA_ONLY)
    assert [c["variant"] for c in expand_noise("precision:variants=bf16+fp16")] == ["bf16", "fp16"]
    with pytest.raises(NoiseSpecError, match="Did you mean 'bf16'"):
        expand_noise("precision:bf61")
    with pytest.raises(NoiseSpecError, match="Variants: fp32, tf32"):
        expand_noise("precision:int3")


def test_flags_are_restored_even_on_error():
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32)
    with pytest.raises(ValueError):
        with _flags(cudnn__benchmark=not before[0], cudnn__allow_tf32=not before[1]):
            assert torch.backends.cudnn.benchmark is (not before[0])
            raise ValueError
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a CPU-only machine")
@pytest.mark.parametrize("variant", CUDA_ONLY)
def test_cuda_variants_fail_clearly_on_cpu(variant, imagenet_sample):
    from robustart.engine.evaluate import evaluate

    with pytest.raises(RobustartError, match=f"precision:{variant} needs a CUDA device"):
        evaluate("efficientnet_lite0", imagenet_sample, noise=f"precision:{variant}", limit=2, progress=False,
                 device="cpu", workers=0)


def test_channels_last_leaves_the_model_alone():
    import robustart

    model = robustart.load_model("efficientnet_lite0")
    noise = build_noise({"name": "precision", "variant": "channels_last"})
    noise.prepare(model, torch.device("cpu"))
    x = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        ref = model(x)
        out = noise.predict(model, x)
    w = next(p for p in model.parameters() if p.ndim == 4)
    assert w.is_contiguous()  # the job's model keeps its memory format; a copy runs channels_last
    assert (out - ref).abs().max() < 1e-3


def test_cpu_variants_through_the_engine(imagenet_sample):
    from robustart.engine.evaluate import evaluate_suite

    # fp16 goes through the same code as bf16 (autocast dtype); it is checked below on one batch
    # because CPU fp16 kernels are slow here (seconds per image)
    s = evaluate_suite("efficientnet_lite0", imagenet_sample, noise="precision:variants=fp32+bf16",
                       limit=4, progress=False, device="cpu", workers=0)
    recs = {j.meta["config"]["noise"]["variant"]: j.records for j in s.jobs}
    fp32 = recs["fp32"]
    # on CPU strict fp32 is the clean pass itself
    assert (fp32["pred"] == fp32["clean_pred"]).all() and (fp32["logit_diff"] == 0).all()
    r = recs["bf16"]
    assert (r["status"] == "ok").all()
    assert (r["logit_diff"] > 0).all()  # the forward pass really ran at lower precision
    assert r["logit_diff"].max() < 3.0  # and stayed a rounding effect (measured <= 0.4)
    m = s.metrics
    assert m["precision_flip_rate"]["fp32"] == 0
    assert m["precision_top1"] == pytest.approx({v: 100 * r["correct"].mean() for v, r in recs.items()})
    assert m["precision_max_logit_diff"]["bf16"] == pytest.approx(float(recs["bf16"]["logit_diff"].max()))
    assert set(PRECISIONS) >= set(m["precision_top1"])
    assert np.isfinite(m["precision_worst_top1"])


@pytest.mark.slow
def test_fp16_runs_on_cpu(imagenet_sample):
    import robustart
    from robustart.data.decode import load_rgb

    model = robustart.load_model("efficientnet_lite0")
    path = sorted(imagenet_sample.glob("n*_*.JPEG"))[0]
    x = model.transform(load_rgb(path)[0])[None].float() / 255
    noise = build_noise({"name": "precision", "variant": "fp16"})
    noise.prepare(model, torch.device("cpu"))
    with torch.inference_mode():
        ref = model(x)
        out = noise.predict(model, x)
    assert out.dtype == torch.float32 and out.argmax(1).item() == ref.argmax(1).item()
    assert 0 < (out - ref).abs().max() < 0.5  # measured 0.03 on 20 images
