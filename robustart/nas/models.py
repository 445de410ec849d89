"""The nas architectures as timm models, so the zoo builds them like any other entry
(`timm.create_model(entry.arch, num_classes=..., **entry.arch_kwargs)`). Importing this module
registers them."""

from __future__ import annotations

from timm.models import register_model

from robustart.nas.genotypes import ABANDIT_CIFAR10, ABANDIT_MNIST, load_genotype
from robustart.nas.network import ABanditNetwork, SmallResNet

_TIMM_EXTRAS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "features_only")


def _clean(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if k not in _TIMM_EXTRAS}


def _no_pretrained(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(f"{name}: no published weights; train a checkpoint with `robustart nas train`.")


@register_model
def abanditnas_10(pretrained: bool = False, **kwargs):
    """ABANDIT_CIFAR_1 in the public evaluation configuration: 10 layers, C = 48, auxiliary
    head, denoising blocks after three cells, 3-channel 32x32 input."""
    _no_pretrained("abanditnas_10", pretrained)
    kw = dict(C=48, layers=10, auxiliary=True, denoise=True, in_chans=3)
    kw.update(_clean(kwargs))
    return ABanditNetwork(ABANDIT_CIFAR10, **kw)


@register_model
def abanditnas_mnist(pretrained: bool = False, **kwargs):
    """ABANDIT_MINIST_NORMAL_1 in the public evaluation configuration: 6 layers, C = 16,
    1-channel 28x28 input."""
    _no_pretrained("abanditnas_mnist", pretrained)
    kw = dict(C=16, layers=6, auxiliary=False, denoise=False, in_chans=1)
    kw.update(_clean(kwargs))
    return ABanditNetwork(ABANDIT_MNIST, **kw)


@register_model
def abanditnas(pretrained: bool = False, genotype=None, **kwargs):
    """Any genotype (a published name, a genotype JSON path or dict) at any size."""
    _no_pretrained("abanditnas", pretrained)
    if genotype is None:
        raise ValueError("abanditnas needs genotype=... (a published name, a genotype file or dict)")
    return ABanditNetwork(load_genotype(genotype), **_clean(kwargs))


@register_model
def small_resnet(pretrained: bool = False, **kwargs):
    """The plain baseline (network.SmallResNet)."""
    _no_pretrained("small_resnet", pretrained)
    return SmallResNet(**_clean(kwargs))

