"""Build zoo models: timm network + weights, with normalisation inside.

A loaded model takes RGB float images in [0, 1] (N, 3, H, W); mean/std live inside, so attack
budgets are in pixel units. The model carries its entry and its eval transform.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from robustart.zoo import weights as W
from robustart.zoo.registry import ModelEntry, get_entry


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ZooModel(nn.Module):
    """Normalize + network. `entry`, `transform` and `weights_sha256` ride along."""

    def __init__(self, net: nn.Module, entry: ModelEntry, weights_sha256: str | None = None):
        super().__init__()
        self.normalize = Normalize(entry.mean, entry.std)
        self.net = net
        self.entry = entry
        self.weights_sha256 = weights_sha256

    @property
    def transform(self):
        from robustart.data.transforms import eval_transform

        return eval_transform(self.entry)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def build_network(entry: ModelEntry) -> nn.Module:
    import timm

    if not timm.is_model(entry.arch):
        import robustart.nas.models  # noqa: F401  (registers the nas architectures with timm)

    return timm.create_model(
        entry.arch, pretrained=False, num_classes=entry.num_classes, **entry.arch_kwargs
    )


def load_weights_into(net: nn.Module, entry: ModelEntry, path: Path) -> None:
    state = W.load_checkpoint(path)
    if entry.weights.key_map == "by_order":
        state = W.remap_by_order(state, net.state_dict(), f"model {entry.name!r}")
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"model {entry.name!r}: checkpoint {path} does not fit {entry.arch}: "
            f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}"
        )


def load_model(
    name: str | ModelEntry,
    *,
    pretrained: bool = True,
    device: str | torch.device = "cpu",
    cache_dir: Path | None = None,
    progress: bool = True,
    backend: str = "fake",
) -> ZooModel:
    """The zoo model `name` in eval mode: RGB [0, 1] in, logits out; `.transform` is its eval
    transform (PIL image -> uint8 CHW tensor at the model's input geometry).

    A quantized form (`NAME@w8a8`) is calibrated on its `calib_data` (or ROBUSTART_CALIB_DATA)
    and runs on `backend` (fake, cpu-int8, triton); a binarized form (`NAME@binary-irnet`) is
    the fp network binarized (robustart.quant.binary)."""
    entry = name if isinstance(name, ModelEntry) else get_entry(name)
    net = build_network(entry)
    sha = None
    if pretrained:
        path = W.fetch(entry, cache_dir=cache_dir, progress=progress)
        sha = W.file_sha256(path)
        if entry.weights.kind in ("package", "file") and not W.sha256_matches(sha, entry.weights.sha256):
            raise W.ChecksumError(
                f"model {entry.name!r}: the checkpoint {path} has sha256 {sha}, expected "
                f"{entry.weights.sha256}. " + ("Reinstall that package." if entry.weights.package else
                                               "It changed since its entry was written; retrain or fix the entry.")
            )
        load_weights_into(net, entry, path)
    model = ZooModel(net, entry, sha).to(device).eval()
    if entry.form == "binary":
        from robustart.quant.forms import binarize_zoo_model

        model = binarize_zoo_model(model, entry.quant["method"]).to(device)
    elif entry.form == "bwta":
        from robustart.quant.bwta import bwta_zoo_model
        from robustart.quant.forms import calibration_set

        model = bwta_zoo_model(model, entry.quant, calibration_set(entry.quant), backend=backend).to(device)
    elif entry.form != "fp":
        from robustart.quant.forms import calibration_set, quantize_zoo_model

        model = quantize_zoo_model(model, entry.quant, calibration_set(entry.quant), backend=backend,
                                   progress=progress)
    return model
