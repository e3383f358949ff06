import pytest
import torch
from torch import nn

from auditor.errors import NumericalError, UnsupportedModelError
from auditor.model import ModelAdapter, find_head, logits_from_output
from tests.conftest import TwoChannelNet, assert_untouched, state_snapshot


def test_finds_last_linear_as_head_and_reads_features():
    model = TwoChannelNet()
    adapter = ModelAdapter(model)
    assert adapter.head_name == "fc" and adapter.n_features == 2 and adapter.n_classes == 2
    images = torch.zeros(4, 3, 8, 8)
    images[:, 0] = 0.5
    out = adapter.forward(images)
    assert torch.allclose(out.features, torch.tensor([[0.5, 0.0]] * 4))
    assert torch.allclose(out.logits, model(images))


def test_no_linear_head_is_a_clear_error():
    with pytest.raises(UnsupportedModelError, match="no nn.Linear"):
        ModelAdapter(nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1)))
    with pytest.raises(UnsupportedModelError, match="no module named 'head'"):
        find_head(TwoChannelNet(), "head")
    with pytest.raises(UnsupportedModelError, match="not nn.Linear"):
        find_head(TwoChannelNet(), "conv")


def test_locates_spatial_layer_whose_channels_are_features():
    adapter = ModelAdapter(TwoChannelNet())
    assert adapter.locate_spatial_layer(torch.zeros(2, 3, 8, 8)) == "relu"
    out = adapter.forward(torch.rand(2, 3, 8, 8), with_spatial=True)
    assert out.spatial.shape == (2, 2, 8, 8)


def test_model_is_left_untouched_even_in_training_mode():
    model = TwoChannelNet().train()
    snapshot = state_snapshot(model)
    adapter = ModelAdapter(model)
    adapter.locate_spatial_layer(torch.rand(2, 3, 8, 8))
    adapter.forward(torch.rand(2, 3, 8, 8), with_spatial=True)
    clone = adapter.copy_with_head(torch.zeros(2, 2), torch.ones(2))
    assert_untouched(model, snapshot, training=True)
    assert torch.equal(clone.fc.bias, torch.ones(2)) and clone is not model


def test_hooks_removed_after_an_exception():
    model = TwoChannelNet()
    adapter = ModelAdapter(model)
    with pytest.raises(RuntimeError):
        adapter.forward(torch.rand(2, 5, 8, 8))  # wrong channel count
    assert not model.fc._forward_pre_hooks


def test_nan_activations_are_reported():
    model = TwoChannelNet()
    with pytest.raises(NumericalError, match="NaN or inf"):
        ModelAdapter(model).forward(torch.full((1, 3, 4, 4), float("nan")))


def test_logits_from_various_outputs():
    t = torch.ones(2, 3)
    assert logits_from_output(t) is t
    assert logits_from_output((t, None)) is t
    assert logits_from_output({"logits": t}) is t

    class Out:
        logits = t

    assert logits_from_output(Out()) is t
    with pytest.raises(UnsupportedModelError):
        logits_from_output("nope")
