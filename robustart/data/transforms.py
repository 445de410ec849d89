"""The eval transform of a zoo entry: timm's own eval pipeline, stopping at uint8.

Resize the shorter side to floor(size / crop_pct), center crop to the input size, then a uint8
CHW tensor. Normalisation is not here: it lives inside the model.
"""

from __future__ import annotations


def eval_transform(entry):
    """`entry`: a zoo ModelEntry (its `data_config`)."""
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


def array_transform(entry):
    """For in-memory datasets (uint8 CHW tensors, data/arrays.py): bring an image to the entry's
    input geometry. Channels: gray is repeated to RGB, RGB becomes gray with the ITU-R 601-2 luma
    weights (as PIL's "L"); size: bilinear resize (antialiased) only when it differs. No crop."""
    c, h, w = entry.input_size

    def transform(x):
        import torch
        import torch.nn.functional as F

        if x.ndim != 3:
            raise ValueError(f"expected a CHW image, got shape {tuple(x.shape)}")
        if x.shape[0] != c:
            if x.shape[0] == 1 and c == 3:
                x = x.expand(3, -1, -1)
            elif x.shape[0] == 3 and c == 1:
                wts = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
                x = (x.float() * wts).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)
            else:
                raise ValueError(f"model {entry.name!r} takes {c}-channel images, the data has {x.shape[0]} channels")
        if tuple(x.shape[1:]) != (h, w):
            x = F.interpolate(x[None].float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]
            x = x.round().clamp(0, 255).to(torch.uint8)
        return x.contiguous()

    return transform
