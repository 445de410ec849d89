"""The registry: coverage, facts checked against timm, lookups and filters."""

import pytest
import torch

from robustart.zoo import registry as R
from robustart.zoo.registry import get_entry, list_entries

# The architectures the zoo must cover, by the names users type.
REQUIRED = {
    "cnn": ["resnet18", "resnet50", "resnet101", "wide_resnet50_2", "resnext50_32x4d", "densenet121",
            "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
            "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2",
            "mobilenet_v3_large", "regnetx_032", "repvgg_a2", "ghostnet_100", "convnext_tiny"],
    "transformer": ["vit_small_patch16_224", "vit_base_patch16_224", "deit_tiny_patch16_224",
                    "deit_small_patch16_224", "deit_base_patch16_224", "swin_tiny_patch4_window7_224",
                    "swin_small_patch4_window7_224", "swin_base_patch4_window7_224"],
    "mixer": ["mixer_b16_224", "mixer_l16_224", "resmlp_12_224", "gmlp_s16_224"],
}


def test_registry_covers_the_required_architectures():
    entries = list_entries()
    assert len(entries) >= 40
    for family, names in REQUIRED.items():
        for name in names:
            assert get_entry(name).family == family, name
    assert len({e.name for e in entries}) == len(entries)


def test_training_technique_variants_are_tagged():
    def names(*tags):
        return {e.name for e in list_entries(tags=tags)}

    assert {"inception_v3.tf_adv_in1k", "inception_resnet_v2.tf_ens_adv_in1k"} <= names("adversarial-training")
    assert "inception_resnet_v2.tf_ens_adv_in1k" in names("ensemble-adversarial-training")
    assert "inception_v3.tf_adv_in1k" not in names("ensemble-adversarial-training")
    assert {"resnet50.fb_swsl_ig1b_ft_in1k", "tf_efficientnet_b0.ns_jft_in1k"} <= names("extra-data")
    assert "vit_base_patch16_224" in names("in21k-pretraining", "extra-data")
    assert "resnet50.am_in1k" in names("augmix")
    # several recipes for one architecture
    resnet50 = [e for e in list_entries() if e.arch == "resnet50"]
    assert len({e.timm_name for e in resnet50}) >= 5
    for e in list_entries():
        assert e.tags, f"{e.name} has no technique tag"
        assert e.form == "fp"


@pytest.mark.parametrize("entry", [e for e in list_entries() if e.timm_name], ids=lambda e: e.name)
def test_entry_facts_match_timm(entry):
    """Preprocessing and weight source agree with timm's pretrained_cfg for the same weights (the
    parameter count of every entry of every family: tests/test_registries.py). The nas family has
    no timm weights; tests/test_nas.py checks its entries."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(entry.timm_name)
    assert cfg is not None and cfg.architecture == entry.arch
    assert tuple(entry.mean) == tuple(cfg.mean) and tuple(entry.std) == tuple(cfg.std)
    assert entry.interpolation == cfg.interpolation
    assert entry.num_classes == cfg.num_classes == 1000
    if entry.name == "resnet50.tv2_in1k":
        # torchvision's published eval for these weights: resize 232, crop 224 (timm's default
        # input_size is the 176 train size)
        assert entry.input_size == cfg.test_input_size
        assert int(224 / entry.crop_pct) == 232
    else:
        assert tuple(entry.input_size) == tuple(cfg.input_size)
        assert entry.crop_pct == cfg.crop_pct
    src = entry.weights
    if src.kind == "hf_hub":
        assert src.hf_hub_id == cfg.hf_hub_id == f"timm/{entry.timm_name}"
    elif src.kind == "url":
        assert src.url == cfg.url and src.sha256 and len(src.sha256) >= 8
        assert src.url.rsplit("-", 1)[1].startswith(src.sha256)
    else:
        assert src.kind == "package" and len(src.sha256) == 64


def test_unknown_name_suggests_close_ones():
    with pytest.raises(R.UnknownModelError) as e:
        get_entry("resnet5")
    assert "Did you mean" in str(e.value) and "'resnet50'" in str(e.value)
    with pytest.raises(R.UnknownModelError) as e:
        get_entry("zzzz")
    assert "Did you mean" not in str(e.value) and "robustart zoo list" in str(e.value)


def test_filters():
    mixers = list_entries(family="mixer")
    assert mixers and all(e.family == "mixer" for e in mixers)
    assert {e.name for e in list_entries(pattern="resnet50*")} >= {"resnet50", "resnet50.a1_in1k"}
    assert all(e.name.startswith("resnet50") for e in list_entries(pattern="resnet50*"))
    with pytest.raises(ValueError, match="Unknown family"):
        list_entries(family="rnn")
    # offline: only what ships in packages (each test has an empty cache)
    offline = {e.name for e in list_entries(offline=True)}
    assert offline == {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}


def test_register_rejects_duplicates_and_bad_fields():
    e = get_entry("resnet18")
    with pytest.raises(ValueError, match="already registered"):
        R.register(e)
    with pytest.raises(ValueError, match="family"):
        R.ModelEntry(name="x", arch="resnet18", family="rnn", weights=R.WeightSource())


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_offline_lite_models_classify_real_photos(name):
    """The by-order key mapping is right only if the real weights recognise real photos."""
    import robustart
    from robustart.data.decode import load_rgb
    from robustart.data.sources import builtin_sample

    model = robustart.load_model(name)
    assert not model.training
    src = builtin_sample()
    x = torch.stack([model.transform(load_rgb(s.path)[0]) for s in src.samples]).float() / 255
    assert tuple(x.shape[-2:]) == tuple(model.entry.input_size[-2:])
    with torch.no_grad():
        top5 = model(x).topk(5, dim=1).indices
    labels = torch.tensor([s.label for s in src.samples])
    assert (top5 == labels[:, None]).any(1).all(), "every built-in photo's label in the top-5"
    coffee = [i for i, s in enumerate(src.samples) if "coffee" in s.id][0]
    assert top5[coffee, 0] == 967  # espresso
