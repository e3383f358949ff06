"""load_model / guess_head_name / guess_feature_layer / model_preprocessing on small models (no downloads)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import torchvision
from torch import nn

from auditor.adapters.models import (
    Preprocessing,
    TorchScriptClassifier,
    guess_feature_layer,
    guess_head_name,
    load_model,
    model_preprocessing,
)
from auditor.demo.world.model import SmallCNN
from auditor.errors import InvalidInputError, MissingWeightsError, UnsupportedModelError
from auditor.model import ModelAdapter

torch.set_num_threads(1)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ----------------------------------------------------------------- timm


def test_timm_resnet_head_layer_and_preprocessing():
    model = load_model("timm:resnet10t", num_classes=3)
    assert not model.training
    assert guess_head_name(model) == "fc"
    assert guess_feature_layer(model, 64) == "layer4"
    pre = model_preprocessing(model)
    assert isinstance(pre, Preprocessing) and pre.source == "timm data config"
    assert pre.mean == pytest.approx((0.485, 0.456, 0.406))
    assert pre.crop_size == (176, 176)  # resnet10t's default eval size
    adapter = ModelAdapter(model, head=guess_head_name(model))
    out = adapter.forward(torch.rand(2, 3, 64, 64))
    assert out.features.shape == (2, 512) and out.logits.shape == (2, 3)


def test_timm_vit_has_head_but_no_spatial_layer():
    model = load_model("timm:vit_tiny_patch16_224", num_classes=4, img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=2)
    assert guess_head_name(model) == "head"
    # the patch embedding's (N, D, h, w) output must not be taken for a CNN feature map
    assert guess_feature_layer(model, 32) is None
    assert model_preprocessing(model).crop_size == (32, 32)  # the size it was built for, not the default 224
    assert ModelAdapter(model, head="head").forward(torch.rand(2, 3, 32, 32)).features.shape == (2, 48)


def test_timm_weights_round_trip_and_num_classes_inferred(tmp_path):
    model = load_model("timm:resnet10t", num_classes=5)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "w.pth")
    loaded = load_model("timm:resnet10t", weights=tmp_path / "w.pth")
    assert loaded.fc.out_features == 5
    assert _same(_state(loaded), _state(model))


def test_pretrained_flag_is_ignored_when_weights_set_the_head_size(tmp_path):
    torch.save(load_model("timm:resnet10t", num_classes=4).state_dict(), tmp_path / "w.pth")
    assert load_model("timm:resnet10t", weights=tmp_path / "w.pth", pretrained=True).fc.out_features == 4


def test_unknown_timm_name_suggests_close_ones():
    with pytest.raises(InvalidInputError, match=r"unknown timm model 'resnet10'.*resnet10t"):
        load_model("timm:resnet10")


# ----------------------------------------------------------------- torchvision


def test_torchvision_resnet_and_weights(tmp_path):
    model = load_model("torchvision:resnet18", num_classes=3)
    assert guess_head_name(model) == "fc"
    assert guess_feature_layer(model, 64) == "layer4"
    assert model_preprocessing(model) is None  # torchvision records no eval transform for random weights
    torch.save(model.state_dict(), tmp_path / "r18.pth")
    reloaded = load_model("torchvision:resnet18", weights=str(tmp_path / "r18.pth"))
    assert reloaded.fc.out_features == 3 and _same(_state(reloaded), _state(model))


def test_torchvision_heads_of_other_families():
    assert guess_head_name(torchvision.models.mobilenet_v3_small(num_classes=3)) == "classifier.3"
    assert guess_head_name(torchvision.models.squeezenet1_0(num_classes=3)) is None  # conv head: no linear


def test_weights_that_do_not_fit(tmp_path):
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(InvalidInputError, match="do not fit the model"):
        load_model("torchvision:resnet34", weights=tmp_path / "r18.pth")
    with pytest.raises(InvalidInputError, match=r"shape mismatch.*fc.weight"):
        load_model("torchvision:resnet18", weights=tmp_path / "r18.pth", num_classes=7)


def test_missing_and_unreadable_weights(tmp_path):
    with pytest.raises(MissingWeightsError, match="does not exist"):
        load_model("torchvision:resnet18", weights=tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidInputError, match="cannot read weights"):
        load_model("torchvision:resnet18", weights=tmp_path / "junk.pth")


def test_unknown_torchvision_name_and_bad_spec():
    with pytest.raises(InvalidInputError, match=r"unknown torchvision model 'resnet181'.*'resnet18'"):
        load_model("torchvision:resnet181")
    with pytest.raises(InvalidInputError, match="cannot read model spec 'resnet18'"):
        load_model("resnet18")


# ----------------------------------------------------------------- Hugging Face


@pytest.fixture(scope="module")
def hf_vit_folder(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("hf-vit")
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)
    return folder


def test_hf_vit_from_local_folder(hf_vit_folder):
    model = load_model(f"hf:{hf_vit_folder}")
    assert guess_head_name(model) == "classifier"
    pre = model_preprocessing(model)
    assert pre is not None and pre.source == "HF image processor"
    assert pre.crop_size == (32, 32) and pre.mean == (0.5, 0.5, 0.5)
    adapter = ModelAdapter(model, head=guess_head_name(model))
    out = adapter.forward(torch.rand(2, 3, 32, 32))  # logits come wrapped in an output object
    assert out.features.shape == (2, 32) and out.logits.shape == (2, 3)


def test_hf_resnet_head_inside_sequential(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=4)
    transformers.ResNetForImageClassification(config).save_pretrained(tmp_path)
    model = load_model(f"hf:{tmp_path}")
    assert guess_head_name(model) == "classifier.1"
    layer = guess_feature_layer(model, 64)
    assert layer is not None and layer.startswith("resnet.encoder")
    assert model_preprocessing(model) is None  # no preprocessor_config.json saved
    assert ModelAdapter(model, head="classifier.1").forward(torch.rand(2, 3, 64, 64)).features.shape == (2, 16)


def test_hf_missing_folder_names_the_fix(tmp_path):
    with pytest.raises(MissingWeightsError, match="save_pretrained"):
        load_model(f"hf:{tmp_path / 'google-vit'}")


# ----------------------------------------------------------------- TorchScript and entry points


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_file_is_split_into_features_and_head(tmp_path):
    torch.manual_seed(0)
    original = SmallCNN(5, width=8).eval()
    scripted = torch.jit.trace(original, torch.rand(1, 3, 32, 32))
    torch.jit.save(scripted, tmp_path / "model.pt")
    model = load_model(str(tmp_path / "model.pt"))
    assert isinstance(model, TorchScriptClassifier)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), original(x), atol=1e-5)
    assert guess_head_name(model) == "head"
    adapter = ModelAdapter(model, head="head")
    out = adapter.forward(x)
    assert out.features.shape == (3, 32)
    assert _no_hooks(model)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_errors(tmp_path):
    with pytest.raises(MissingWeightsError):
        load_model(str(tmp_path / "absent.pt"))
    torch.save(SmallCNN(3).state_dict(), tmp_path / "state.pt")
    with pytest.raises(InvalidInputError, match="not a TorchScript file"):
        load_model(str(tmp_path / "state.pt"))
    no_linear = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    torch.jit.save(no_linear, tmp_path / "conv.pt")
    with pytest.raises(UnsupportedModelError, match="no linear layer"):
        load_model(str(tmp_path / "conv.pt"))


def test_entry_point_module_and_file(tmp_path):
    model = load_model("auditor.demo.world.model:SmallCNN", n_classes=4, width=8)
    assert isinstance(model, SmallCNN) and model.fc.out_features == 4
    assert guess_head_name(model) == "fc"
    torch.save(model.state_dict(), tmp_path / "w.pt")
    (tmp_path / "build.py").write_text(
        "from auditor.demo.world.model import SmallCNN\n"
        "def build(num_classes=2):\n    return SmallCNN(num_classes, width=8)\n"
        "def not_a_model():\n    return 3\n"
    )
    loaded = load_model(f"{tmp_path / 'build.py'}:build", weights=tmp_path / "w.pt", num_classes=4)
    assert _same(_state(loaded), _state(model))
    with pytest.raises(InvalidInputError, match="returned int"):
        load_model(f"{tmp_path / 'build.py'}:not_a_model")
    with pytest.raises(InvalidInputError, match="has no attribute 'biuld'.*'build'"):
        load_model(f"{tmp_path / 'build.py'}:biuld")
    with pytest.raises(InvalidInputError, match="cannot import module"):
        load_model("no_such_package_xyz:build")


def test_guess_feature_layer_leaves_model_untouched():
    model = SmallCNN(5, width=8)
    model.train()
    before = _state(model)
    assert guess_feature_layer(model, 32) == "features"  # last map larger than 1x1, not the global pool
    assert model.training and _no_hooks(model) and _same(before, _state(model))
