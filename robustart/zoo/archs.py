"""Architectures of the built-in families that timm has no entry point for, registered with timm
when a family needs them (a family's `architectures`), so the zoo builds them like any other
entry (`timm.create_model(entry.arch, num_classes=..., **entry.arch_kwargs)`)."""

from __future__ import annotations

from timm.models import register_model

_TIMM_EXTRAS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "features_only")


@register_model
def small_mixer(pretrained: bool = False, **kwargs):
    """An MLP-Mixer of any size (timm's MlpMixer; its own entry points fix the patch size), for
    small inputs such as Fashion-MNIST's 28x28."""
    if pretrained:
        raise ValueError("small_mixer: no published weights; train it (e.g. benchmarks/transformer_lowbit_fashion_mnist.py).")
    from timm.models.mlp_mixer import MlpMixer

    kw = dict(img_size=28, in_chans=1, patch_size=4, num_blocks=4, embed_dim=64)
    kw.update({k: v for k, v in kwargs.items() if k not in _TIMM_EXTRAS})
    return MlpMixer(**kw)
