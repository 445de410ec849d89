"""Build zoo models: timm network + weights, with normalisation inside. `build` is the one way
a zoo model is made (robustart.load_model and the engine use it), with one set of checks: the
backend fits the entry's form, the checkpoint's sha256 is the one its entry pins, the checkpoint
fits the architecture.

A loaded model takes RGB float images in [0, 1] (N, 3, H, W); mean/std live inside, so attack
budgets are in pixel units. The model carries its entry and its eval transform.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from robustart.errors import RobustartError
from robustart.zoo import weights as W
from robustart.zoo.registry import FAMILIES, ModelEntry, form_provider, get_entry


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

    if not timm.is_model(entry.arch) and entry.family in FAMILIES:
        FAMILIES.get(entry.family).load_architectures()  # a family's own architectures (nas)

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


def check_backend(entry: ModelEntry, backend: str) -> None:
    """`backend` runs this entry's form: fp models take only the default ("fake"); a form's
    provider (robustart.quant) checks its own."""
    if entry.form == "fp":
        if backend != "fake":
            raise RobustartError(f"--backend {backend} runs quantized forms; {entry.name!r} is fp. Name a form, e.g. "
                                 f"--model {entry.name}@w8a8, or compare backends with --noise precision:w8a8.")
        return
    form_provider(entry.form).check_backend(entry, backend)


def calibration_for(entry: ModelEntry, source=None):
    """The calibration images a form needs (drawn from `source`, the evaluated dataset, unless the
    form names others), or None."""
    return None if entry.form == "fp" else form_provider(entry.form).calibration(entry, source)


def verified_weights(entry: ModelEntry, *, cache_dir: Path | None = None, progress: bool = True) -> tuple[Path, str]:
    """The entry's checkpoint (fetched if needed) and its sha256, which must be the one the entry
    pins (the whole digest, or its prefix)."""
    path = W.fetch(entry, cache_dir=cache_dir, progress=progress)
    sha = W.file_sha256(path)
    if not W.sha256_matches(sha, entry.weights.sha256):
        kind = entry.weights.kind
        todo = ("Reinstall that package." if kind == "package" else
                "This local file changed since its entry was written (nothing downloads it again): restore it, "
                "or write the entry again for the new file (e.g. retrain; or put its sha256 in the entry's "
                "weights.sha256 if the change is wanted)." if kind == "file" else
                f"Delete it and download again (`robustart zoo download {entry.name} --force`).")
        raise W.ChecksumError(f"model {entry.name!r}: the checkpoint {path} has sha256 {sha}, expected "
                              f"{entry.weights.sha256}. {todo}")
    return path, sha


def build(
    entry: str | ModelEntry,
    *,
    pretrained: bool = True,
    device: str | torch.device = "cpu",
    cache_dir: Path | None = None,
    progress: bool = True,
    backend: str = "fake",
    calibration=None,
    weights: tuple[Path, str] | None = None,
    seed: int | None = None,
) -> ZooModel:
    """The zoo model of `entry` in eval mode on `device`.

    calibration: a quantized form's calibration images (robustart.quant.forms.CalibSet; default:
    its `calib_data`, else ROBUSTART_CALIB_DATA). weights: (path, sha256) already verified by
    `verified_weights` (the engine verifies once per plan). seed: seeds torch before the network
    is made (its random initialisation, before the weights are loaded)."""
    entry = entry if isinstance(entry, ModelEntry) else get_entry(entry)
    check_backend(entry, backend)
    if seed is not None:
        torch.manual_seed(seed)
    net = build_network(entry)
    if isinstance(entry.quant, dict) and entry.quant.get("trained"):  # a local entry of a trained form: its layers first
        net = form_provider(entry.form).trained_network(net, entry)
    sha = None
    if pretrained:
        path, sha = weights if weights is not None else verified_weights(entry, cache_dir=cache_dir, progress=progress)
        load_weights_into(net, entry, path)
    model = ZooModel(net, entry, sha).to(device).eval()
    if entry.form != "fp":
        model = form_provider(entry.form).build(model, entry, calibration=calibration, backend=backend,
                                                progress=progress).to(device)
    return model


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
    return build(name, pretrained=pretrained, device=device, cache_dir=cache_dir, progress=progress, backend=backend)
