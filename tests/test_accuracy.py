"""Correctness bar: robustart's clean evaluation of efficientnet_lite0 on the ImageNet sample
matches timm's own eval transform + model pipeline within 0.5 points top-1."""

import pytest
import torch

pytestmark = pytest.mark.slow


def _timm_pipeline_predictions(sample_dir, ids):
    """timm alone: create_transform(resolve_data_config) with normalisation, timm model, the
    same checkpoint mapped onto it. Returns top-1 predictions in `ids` order."""
    import timm
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from robustart.zoo import weights as W
    from robustart.zoo.registry import get_entry

    entry = get_entry("efficientnet_lite0")
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    state = W.load_checkpoint(W.fetch(entry))
    net.load_state_dict(W.remap_by_order(state, net.state_dict(), "lite0"))
    tf = create_transform(**resolve_data_config({}, model=net))
    preds = []
    batch = []
    torch.set_grad_enabled(False)
    for i, sid in enumerate(ids):
        with Image.open(sample_dir / sid) as im:
            batch.append(tf(im.convert("RGB")))
        if len(batch) == 50 or i == len(ids) - 1:
            preds += net(torch.stack(batch)).argmax(1).tolist()
            batch = []
    torch.set_grad_enabled(True)
    return preds


def test_lite0_matches_timm_pipeline(imagenet_sample, tmp_path):
    from robustart.engine.evaluate import evaluate

    res = evaluate("efficientnet_lite0", imagenet_sample, store=tmp_path, batch_size=50, progress=False)
    rec = res.records
    assert len(rec) == len(list(imagenet_sample.glob("*.JPEG")))
    ours = res.metrics["top1"]
    theirs_pred = _timm_pipeline_predictions(imagenet_sample, list(rec["sample_id"]))
    theirs = 100.0 * sum(int(p == l) for p, l in zip(theirs_pred, rec["label"])) / len(rec)
    agree = sum(int(p == q) for p, q in zip(theirs_pred, rec["pred"])) / len(rec)
    print(f"robustart top-1 {ours:.2f}, timm pipeline top-1 {theirs:.2f}, agreement {agree:.4f}")
    assert abs(ours - theirs) <= 0.5
    assert agree >= 0.99
    assert ours > 85.0  # the real weights on real images (about 88% here)
