import pytest
import torch
from torch import nn

from auditor.errors import InvalidInputError, NumericalError, UnsupportedModelError
from auditor.model import (
    ModelAdapter,
    eval_mode,
    find_head,
    logits_from_output,
    resolve_head,
)
from tests.conftest import ProjNet, TwoChannelNet, assert_untouched, state_snapshot


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
    assert adapter.feature_layer_name is None  # found by the dry run, not named by the user
    named = ModelAdapter(TwoChannelNet(), feature_layer="relu")
    assert named.feature_layer_name == "relu" and named.locate_spatial_layer(torch.zeros(2, 3, 8, 8)) == "relu"


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


class BNNet(nn.Module):
    """conv -> BatchNorm -> (optionally raising) -> pool -> fc; the BN can be frozen in eval by the user."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 2)
        self.fail = False

    def forward(self, x):
        x = self.bn(self.conv(x))
        if self.fail:
            raise RuntimeError("model failed midway")
        return self.fc(self.drop(x).mean((2, 3)))


def _modes(model):
    return {name: m.training for name, m in model.named_modules()}


@pytest.mark.parametrize("fail", [False, True])
def test_every_submodule_flag_and_no_hook_survive_success_and_failure(fail):
    model = BNNet().train()
    model.bn.eval()  # the user froze BatchNorm statistics inside a training-mode model
    before, snapshot = _modes(model), state_snapshot(model)
    adapter = ModelAdapter(model)
    model.fail = fail
    if fail:
        with pytest.raises(RuntimeError, match="failed midway"):
            adapter.forward(torch.rand(2, 3, 8, 8), with_spatial=False)
        with pytest.raises(RuntimeError, match="failed midway"):
            adapter.locate_spatial_layer(torch.rand(2, 3, 8, 8))
    else:
        adapter.locate_spatial_layer(torch.rand(2, 3, 8, 8))
        adapter.forward(torch.rand(2, 3, 8, 8), with_spatial=True)
    assert _modes(model) == before and model.training and not model.bn.training
    assert_untouched(model, snapshot, training=True)  # BN in eval: running stats unchanged too


def test_resolve_head_explains_its_choice(caplog):
    caplog.set_level("INFO", logger="auditor.model")
    assert resolve_head(TwoChannelNet())[0] == "fc"
    assert "head: 'fc' (2 -> 2), the model's `fc` attribute" in caplog.text
    sequential = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    name, module = resolve_head(sequential)
    assert name == "3" and module is sequential[3] and "the last nn.Linear" in caplog.text
    assert resolve_head(sequential, "1") == ("1", sequential[1])
    assert find_head(sequential) == resolve_head(sequential)


def test_a_non_head_linear_is_named_and_model_head_suggested(caplog):
    model = ProjNet()
    snapshot = state_snapshot(model)
    adapter = ModelAdapter(model)
    assert adapter.head_name == "proj" and "`head` has no nn.Linear, so the head is 'proj'" in caplog.text
    with pytest.raises(InvalidInputError, match=r"5 class names given but the model's head 'proj' \(the last nn.Linear.*\) has 32 outputs.*`model.head`"):
        adapter.check_class_names(["a", "b", "c", "d", "e"])
    with pytest.raises(UnsupportedModelError, match=r"logits of shape \(2, 5\) but the layer picked as head, 'proj'.*set `model.head`"):
        adapter.forward(torch.rand(2, 3, 2, 2))
    assert_untouched(model, snapshot, training=True)
    ModelAdapter(TwoChannelNet()).check_class_names(["a", "b"])


def test_head_name_errors_list_the_linear_layers():
    with pytest.raises(UnsupportedModelError, match=r"no module named 'head'.*Linear layers: fc \(2->2\)"):
        resolve_head(TwoChannelNet(), "head")


def test_eval_mode_restores_each_flag_after_an_exception():
    model = BNNet().train()
    model.bn.eval()
    with pytest.raises(ValueError), eval_mode(model):
        assert not any(m.training for m in model.modules())
        raise ValueError("inside")
    assert model.training and model.conv.training and not model.bn.training
