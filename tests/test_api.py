"""The timm-style API: names, create_model options, the card's three usages and their shapes."""

from __future__ import annotations

import re

import pytest
import torch

import fastvit
from conftest import synthetic_model
from fastvit.errors import UnknownModelError
from fastvit.models.layers import LayerNorm2d
from fastvit.runtime.precision import PrecisionNotSupportedError

T8_MAPS = [(48, 64, 64), (96, 32, 32), (192, 16, 16), (384, 8, 8)]


def test_list_models_matches_timm_registry():
    assert fastvit.list_models() == [
        "fastvit_ma36", "fastvit_mci0", "fastvit_mci1", "fastvit_mci2", "fastvit_mci3", "fastvit_mci4",
        "fastvit_s12", "fastvit_sa12", "fastvit_sa24", "fastvit_sa36", "fastvit_t8", "fastvit_t12",
    ]
    pretrained = fastvit.list_models(pretrained=True)
    assert len(pretrained) == 21
    assert "fastvit_t8.apple_dist_in1k" in pretrained and "fastvit_mci4.apple_mclip2_dfndr2b" in pretrained
    assert fastvit.list_models("*t8*") == ["fastvit_t8"]
    assert fastvit.list_models("fastvit_mci*", pretrained=True, include_tags=False)[:1] == ["fastvit_mci0"]
    assert fastvit.list_models("fastvit_sa*", exclude_filters="*sa36") == ["fastvit_sa12", "fastvit_sa24"]


@pytest.mark.parametrize(
    "name, expected",
    [("fastvit_t9", "fastvit_t8"), ("fastvit_sa12.apple_in1", "fastvit_sa12.apple_in1k"), ("fastvit-t12", "fastvit_t12")],
)
def test_unknown_names_suggest_close_ones(name, expected):
    with pytest.raises(UnknownModelError, match=expected):
        fastvit.create_model(name)


def test_create_model_takes_what_timms_scripts_pass():
    """timm's create_model leaves out None keyword arguments (train.py passes its unset options) and
    takes pretrained_cfg (a tag or a dict), scriptable, exportable and no_jit."""
    unset = dict(num_classes=None, global_pool=None, in_chans=None, drop_path_rate=None, drop_block_rate=None,
                 out_indices=None, scriptable=None, exportable=True, no_jit=True)
    with torch.device("meta"):
        model = fastvit.create_model("fastvit_t8", **unset)
        assert model.num_classes == 1000 and model.global_pool == "avg"
        assert fastvit.create_model("fastvit_t8", features_only=True, out_indices=None).feature_info.out_indices == (
            0, 1, 2, 3)
        distilled = fastvit.create_model("fastvit_t8", pretrained_cfg="apple_dist_in1k")
        assert distilled.pretrained_cfg["tag"] == "apple_dist_in1k"
        assert fastvit.create_model("fastvit_t8", pretrained_cfg={"crop_pct": 1.0}).pretrained_cfg["crop_pct"] == 1.0
        overlaid = fastvit.create_model("fastvit_t8", pretrained_cfg_overlay={"test_input_size": (3, 320, 320)})
    assert fastvit.resolve_data_config(model=overlaid, use_test_size=True)["input_size"] == (3, 320, 320)


def test_pretrained_cfg_is_timms():
    cfg = fastvit.create_model("fastvit_t8").pretrained_cfg
    assert cfg["architecture"] == "fastvit_t8" and cfg["tag"] == "apple_in1k"
    assert cfg["hf_hub_id"] == "timm/fastvit_t8.apple_in1k"
    assert cfg["input_size"] == (3, 256, 256) and cfg["crop_pct"] == 0.9 and cfg["interpolation"] == "bicubic"
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    assert cfg["first_conv"] == ("stem.0.conv_kxk.0.conv", "stem.0.conv_scale.conv") and cfg["classifier"] == "head.fc"
    assert cfg["license"] == "fastvit-license" and cfg["metrics"]["top1"] == 76.184
    assert fastvit.get_pretrained_cfg("fastvit_ma36.apple_dist_in1k")["crop_pct"] == 0.95
    mci0 = fastvit.get_pretrained_cfg("fastvit_mci0")
    assert mci0["tag"] == "apple_mclip" and mci0["hf_hub_id"] == "apple/mobileclip_s0_timm" and mci0["num_classes"] == 512
    assert fastvit.get_pretrained_cfg("fastvit_mci0.apple_mclip2_dfndr2b")["crop_pct"] == 1.0
    mci3 = fastvit.get_pretrained_cfg("fastvit_mci3")
    assert mci3["mean"] == (0.48145466, 0.4578275, 0.40821073) and mci3["pool_size"] == (4, 4)
    assert mci3["first_conv"] == "stem.0.conv_kxk.0.conv" and mci3["license"] == "apple-amlr"
    assert fastvit.create_model("fastvit_mci2").num_classes == 512


@pytest.fixture(scope="module")
def t8():
    return synthetic_model("fastvit_t8")


def test_card_usages_shapes(t8):
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert t8(x).shape == (1, 1000)
        features = t8.forward_features(x)
        assert features.shape == (1, 768, 8, 8)
        assert t8.forward_head(features, pre_logits=True).shape == (1, 768)
        assert t8.num_features == t8.head_hidden_size == 768
        embedder = synthetic_model("fastvit_t8", num_classes=0)
        embedding = embedder(x)
        assert embedding.shape == (1, 768)
        torch.testing.assert_close(embedding, t8.forward_head(features, pre_logits=True))
        maps = synthetic_model("fastvit_t8", features_only=True)(x)
        assert [tuple(m.shape[1:]) for m in maps] == T8_MAPS


def test_features_only_selection_and_info():
    model = fastvit.create_model("fastvit_t8", features_only=True, out_indices=(1, 3))
    assert model.feature_info.channels() == [96, 384]
    assert model.feature_info.reduction() == [8, 32]
    assert model.feature_info.module_name() == ["stages.1", "stages.3"]
    assert model.feature_info.get_dicts(keys=["num_chs", "reduction"]) == [  # how detection libraries ask
        {"num_chs": 96, "reduction": 8}, {"num_chs": 384, "reduction": 32}]
    assert model.feature_info.get_dicts(idx=0) == {"num_chs": 48, "reduction": 4, "module": "stages.0", "index": 0}
    assert model.feature_info.from_other((0,)).channels() == [48] and model.feature_info.get("index") == [1, 3]
    x = torch.randn(1, 3, 256, 256)
    assert [tuple(m.shape[1:]) for m in model(x)] == [T8_MAPS[1], T8_MAPS[3]]
    assert [m.shape[1] for m in fastvit.create_model("fastvit_t8", features_only=True, out_indices=2)(x)] == [192, 384]
    last = fastvit.create_model("fastvit_t8", features_only=True, out_indices=(-1,))
    assert [m.shape[1] for m in last(x)] == [384]
    assert last.feature_info.out_indices == (-1,)  # kept as given, like timm's
    swapped = fastvit.create_model("fastvit_t8", features_only=True, out_indices=(3, 1, 1))
    assert [m.shape[1] for m in swapped(x)] == [96, 384] and swapped.out_indices == (1, 3)  # what comes out
    assert swapped.feature_info.out_indices == (3, 1, 1)
    assert fastvit.create_model("fastvit_t8", features_only=True, out_indices=2).feature_info.out_indices == (-2, -1)
    shallow = fastvit.create_model("fastvit_t8", features_only=True, out_indices=(0,))
    assert not any(name.startswith("stages_1") for name, _ in shallow.named_children())
    with torch.device("meta"):
        five = fastvit.create_model("fastvit_mci3", features_only=True, out_indices=(0, 1, 2, 3, 4))
    assert five.feature_info.reduction() == [4, 8, 16, 32, 64]
    with pytest.raises(ValueError, match="out of range"):
        fastvit.create_model("fastvit_t8", features_only=True, out_indices=(4,))


def test_parameter_groups_for_layer_decay(t8):
    """group_matcher gives timm's groups: every parameter in the stem or a numbered stage group."""
    names = [name for name, _ in t8.named_parameters()]
    coarse, fine = t8.group_matcher(coarse=True), t8.group_matcher()
    assert coarse == {"stem": r"^stem", "blocks": r"^stages\.(\d+)"}
    for name in names:
        if name.startswith(("final_conv", "head")):
            continue
        assert re.match(coarse["stem"], name) or re.match(coarse["blocks"], name), name
        assert re.match(fine["stem"], name) or any(re.match(pattern, name) for pattern, _ in fine["blocks"]), name
    downsample, pos_emb, block = (pattern for pattern, _ in fine["blocks"])
    assert re.match(downsample, "stages.2.downsample.proj.0.conv_kxk.0.conv.weight").group(1) == "2"
    assert re.match(block, "stages.3.blocks.1.mlp.fc1.weight").groups() == ("3", "1")
    assert pos_emb.startswith(r"^stages") and t8.no_weight_decay() == set()


def test_forward_intermediates(t8):
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        final, maps = t8.forward_intermediates(x)
        assert final.shape == (1, 768, 8, 8) and [tuple(m.shape[1:]) for m in maps] == T8_MAPS
        torch.testing.assert_close(final, t8.forward_features(x))
        last_two = t8.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [m.shape[1] for m in last_two] == [192, 384]
    torch.testing.assert_close(last_two[1], maps[3])


def test_prune_intermediate_layers():
    model = fastvit.create_model("fastvit_t8")
    assert model.prune_intermediate_layers(indices=(1,)) == [1]
    out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 96, 8, 8) and model.num_features == 96 and len(model.stages) == 2


def test_reset_classifier_and_pooling(t8):
    model = synthetic_model("fastvit_t8")
    model.reset_classifier(10)
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 10) and model.get_classifier().out_features == 10
    model.reset_classifier(0)
    assert model(x).shape == (2, 768)
    model.reset_classifier(0, global_pool="")
    assert model(x).shape == (2, 768, 2, 2)
    model.reset_classifier(5, global_pool="catavgmax")
    assert model(x).shape == (2, 5) and model.head_hidden_size == 1536
    assert fastvit.create_model("fastvit_t8", global_pool="max", num_classes=3)(x).shape == (2, 3)
    with pytest.raises(ValueError, match="global_pool"):
        fastvit.create_model("fastvit_t8", global_pool="")
    with pytest.raises(ValueError, match="global_pool"):
        fastvit.create_model("fastvit_t8", global_pool="median")


@pytest.mark.parametrize("fast, plain", [("fast", "avg"), ("fastavg", "avg"), ("fastmax", "max"),
                                         ("fastavgmax", "avgmax"), ("fastcatavgmax", "catavgmax")])
def test_timms_fast_pool_names(fast, plain):
    """timm accepts its 'fast' pooling names at creation and in reset_classifier; they compute the same."""
    model = synthetic_model("fastvit_t8", global_pool=fast)
    assert model.global_pool == fast
    features = torch.randn(2, 768, 2, 2)
    assert torch.equal(model.forward_head(features, pre_logits=True),
                       synthetic_model("fastvit_t8", global_pool=plain).forward_head(features, pre_logits=True))
    x = torch.randn(2, 3, 64, 64)
    model.reset_classifier(4, fast)
    assert model(x).shape == (2, 4) and model.head_hidden_size == (1536 if plain == "catavgmax" else 768)
    with pytest.raises(ValueError, match="global_pool"):
        fastvit.create_model("fastvit_t8", global_pool="fastmedian")


@pytest.mark.parametrize("in_chans", [1, 4])
def test_in_chans(in_chans):
    model = fastvit.create_model("fastvit_t8", in_chans=in_chans).eval()
    assert model(torch.randn(1, in_chans, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize(
    "size, maps",
    [((224, 224), [56, 28, 14, 7]), ((225, 225), [57, 29, 15, 8]), ((97, 131), [(25, 33), (13, 17), (7, 9), (4, 5)])],
)
def test_any_input_size(t8, size, maps):
    with torch.no_grad():
        _, intermediates = t8.forward_intermediates(torch.randn(1, 3, *size))
    expected = [m if isinstance(m, tuple) else (m, m) for m in maps]
    assert [tuple(m.shape[2:]) for m in intermediates] == expected


@pytest.mark.parametrize("name", ["fastvit_t8", "fastvit_sa12"])
def test_channels_last_input(name):
    model = synthetic_model(name)
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        expected = model(x)
        assert (model(x.to(memory_format=torch.channels_last)) - expected).abs().max() <= 1e-4 * expected.abs().max()
        fast = model.to(memory_format=torch.channels_last)
        actual = fast(x.to(memory_format=torch.channels_last))
    assert (actual - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_layer_norm_2d_accepts_channels_last():
    norm = LayerNorm2d(16, eps=1e-5)
    x = torch.randn(2, 16, 5, 7)
    expected = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (16,), eps=1e-5).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected)
    torch.testing.assert_close(norm(x.to(memory_format=torch.channels_last)), expected)


def test_drop_rates_only_act_in_training():
    model = synthetic_model("fastvit_t8", drop_rate=0.5, drop_path_rate=0.3, proj_drop_rate=0.1)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.3) and min(rates) > 0
    assert model.head.drop.p == 0.5
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
        model.train()
        assert not torch.allclose(model(x), model(x))


def test_wrong_arguments_get_specific_errors():
    """Each used to fail inside, with an AttributeError or a message about something else."""
    with pytest.raises(TypeError, match="model_name is a model's name such as 'fastvit_t8', got 8"):
        fastvit.create_model(8)
    with pytest.raises(TypeError, match="Predictor takes a model"):
        fastvit.Predictor("fastvit_t8")
    with pytest.raises(TypeError, match="reparameterize takes a model"):
        fastvit.reparameterize("fastvit_t8")
    with pytest.raises(ValueError, match="no feature index given"):
        fastvit.create_model("fastvit_t8", features_only=True, out_indices=())
    with pytest.raises(TypeError, match="feature indices are whole numbers, got '01'"):
        fastvit.create_model("fastvit_t8", features_only=True, out_indices="01")
    for size in ((3, -1, 5), 0):
        with pytest.raises(ValueError, match="input_size must be"):
            fastvit.create_transform(input_size=size)
    predictor = fastvit.Predictor(synthetic_model("fastvit_t8"), compile=False, input_size=(3, 64, 64))
    for bad in (lambda: predictor.prepare([-1]), lambda: predictor.prepare([0]), lambda: predictor.expect(0, 100),
                lambda: predictor.expect("8", 100), lambda: predictor.expect(1, -1)):
        with pytest.raises(ValueError, match="must be a whole number of at least"):
            bad()
    assert fastvit.PrecisionNotSupportedError is PrecisionNotSupportedError  # the README names it


def test_model_info_takes_height_and_width_too():
    three = fastvit.model_info("fastvit_t8", input_size=(3, 224, 224))
    assert fastvit.model_info("fastvit_t8", input_size=(224, 224)) == three
