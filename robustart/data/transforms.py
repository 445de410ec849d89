"""The eval transform of a zoo entry: timm's own eval pipeline, stopping at uint8.

Resize the shorter side to floor(size / crop_pct), center crop to the input size, then a uint8
CHW tensor. Normalisation is not here: it lives inside the model.
"""

from __future__ import annotations

from robustart.zoo.registry import ModelEntry


def eval_transform(entry: ModelEntry):
    from timm.data.transforms_factory import transforms_imagenet_eval

    cfg = entry.data_config
    return transforms_imagenet_eval(
        img_size=cfg["input_size"][-2:],
        crop_pct=cfg["crop_pct"],
        crop_mode=cfg["crop_mode"],
        interpolation=cfg["interpolation"],
        mean=cfg["mean"],
        std=cfg["std"],
        normalize=False,  # ends with a uint8 tensor; the model normalises
    )
