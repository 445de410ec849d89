"""Post-training quantization: calibrate a quantized network on a small image set.

1. every activation quantizer observes the float network's activations on the calibration images;
   ranges -> scales / zero points by the config's observer; weights get per-channel scales;
2. a second pass with quantized inputs records each layer's output range (the requantization
   scale integer backends with 8-bit outputs need);
3. optionally, BRECQ/AdaRound block reconstruction (robustart.quant.reconstruct) learns the
   rounding of each weight.
"""

from __future__ import annotations

import torch
from torch import nn

from robustart.quant import fake as Q
from robustart.quant.qconfig import QuantConfig


def _batches(images: torch.Tensor, batch_size: int):
    for i in range(0, images.shape[0], batch_size):
        yield images[i:i + batch_size]


@torch.no_grad()
def calibrate(model: nn.Module, images: torch.Tensor, cfg: QuantConfig, *, batch_size: int = 16,
              progress=None) -> nn.Module:
    """Calibrate `model` (whose network went through `quantize_modules`) on float images in
    [0, 1]; returns it in quantized mode."""
    model.eval()
    Q.set_mode(model, "calib")
    for xb in _batches(images, batch_size):
        model(xb)
    for a in Q.act_quantizers(model):
        if a.fixed_range is None and a.stats is None:
            raise RuntimeError("an activation quantizer saw no data during calibration (unused layer?)")
        a.finish(cfg.observer, cfg.percentile)
    for layer in Q.quant_layers(model):
        layer.set_weight_params(cfg.observer, cfg.percentile)
    Q.set_mode(model, "quant")
    if getattr(cfg, "method", "plain") == "apq":  # APQ-ViT's blockwise calibration of the ranges
        from robustart.quant.apq import calibrate_blocks

        calibrate_blocks(model, images, cfg, progress=progress)
    if cfg.recon:
        from robustart.quant.reconstruct import reconstruct

        with torch.enable_grad():
            reconstruct(model, images, cfg, progress=progress)
    record_output_ranges(model, images, batch_size)
    return model


@torch.no_grad()
def record_output_ranges(model: nn.Module, images: torch.Tensor, batch_size: int = 16) -> None:
    layers = Q.quant_layers(model)
    for layer in layers:
        layer.out_range.zero_()
        layer.observe_output = True
    try:
        for xb in _batches(images, batch_size):
            model(xb)
    finally:
        for layer in layers:
            layer.observe_output = False
